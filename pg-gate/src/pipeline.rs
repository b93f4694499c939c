//! [`pipelined`]: two requests on one connection in one round trip, sent in order.
//!
//! tokio-postgres sends a request when its future is first polled and runs requests in
//! the order they were first polled, so polling two request futures together puts both on
//! the wire before either answer is back (its documentation, "Pipelining"). The server
//! still runs them one after the other, in that order.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls `first`, then `second`, on every wake-up until both are done: `first`'s request
/// always goes out before `second`'s, and both answers are awaited together.
pub async fn pipelined<A: Future, B: Future>(first: A, second: B) -> (A::Output, B::Output) {
    let mut first = pin!(first);
    let mut second = pin!(second);
    let mut first_out = None;
    let mut second_out = None;
    poll_fn(|cx| {
        if first_out.is_none() {
            if let Poll::Ready(out) = first.as_mut().poll(cx) {
                first_out = Some(out);
            }
        }
        if second_out.is_none() {
            if let Poll::Ready(out) = second.as_mut().poll(cx) {
                second_out = Some(out);
            }
        }
        match (first_out.take(), second_out.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                first_out = a;
                second_out = b;
                Poll::Pending
            }
        }
    })
    .await
}

/// Sends `request`'s message without waiting for its answer: polls it once, which puts
/// it on the connection's queue, and drops it (the connection discards the answer). For
/// `Drop`, which cannot await. Requests the client makes afterwards run after it.
pub fn send_without_waiting<F: Future>(request: F) {
    let request = pin!(request);
    let _ = request.poll(&mut Context::from_waker(Waker::noop()));
}
