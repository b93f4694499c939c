//! [`InFlight`]: how many requests one session stream has sent and not yet had answered,
//! bounded so that the excess waits in the client.
//!
//! The server serves at most `--max-session-in-flight` requests of a session at once, and
//! refuses a framed session's requests past that with RESOURCE_EXHAUSTED (a gRPC session
//! stops reading instead). A request counts from just before it is handed to the stream
//! until its answer comes back, which is never before the server stopped counting it: so
//! a client that keeps at most the server's cap in flight is never refused for it. A
//! caller that stops waiting does not free its room: the server is still serving its
//! request until the answer comes.

use tokio::sync::{Semaphore, SemaphorePermit};

/// The rooms of one stream: one per request that may be in flight at once.
pub(crate) struct InFlight {
    /// The free rooms. A room taken for a request that was sent is forgotten, and given
    /// back when an answer comes; closed when the stream takes no more requests.
    free: Semaphore,
    /// How many requests may be in flight at once.
    cap: usize,
}

/// Room for one request that is about to be sent. Dropped unsent, it is free again.
pub(crate) struct Room<'a>(SemaphorePermit<'a>);

impl Room<'_> {
    /// The request was handed to the stream: its room stays taken until an answer comes
    /// ([`InFlight::answered`]).
    pub(crate) fn sent(self) {
        self.0.forget();
    }
}

impl InFlight {
    /// At most `cap` requests in flight; `cap` is held to `1..=`
    /// [`Config::MOST_SESSION_IN_FLIGHT`](crate::Config::MOST_SESSION_IN_FLIGHT), which
    /// [`Config::validate`](crate::Config::validate) also enforces.
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.clamp(1, crate::Config::MOST_SESSION_IN_FLIGHT);
        InFlight {
            free: Semaphore::new(cap),
            cap,
        }
    }

    /// Waits for room for one more request; `None` once the stream takes no more
    /// ([`InFlight::close`]).
    pub(crate) async fn room(&self) -> Option<Room<'_>> {
        self.free.acquire().await.ok().map(Room)
    }

    /// Room for one more request if there is some now.
    pub(crate) fn try_room(&self) -> Option<Room<'_>> {
        self.free.try_acquire().ok().map(Room)
    }

    /// An answer came: its request's room is free. A server that answers more than it
    /// was sent cannot raise the count past the cap (nor make it overflow).
    pub(crate) fn answered(&self) {
        // Only the stream's reader gives rooms back, so the count cannot rise between the
        // check and the addition.
        if self.free.available_permits() < self.cap {
            self.free.add_permits(1);
        }
    }

    /// The stream takes no more requests: every caller waiting for room, and every later
    /// one, gets `None` (and goes to a new stream; nothing was sent).
    pub(crate) fn close(&self) {
        self.free.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_past_the_cap_waits_for_an_answer() {
        let in_flight = InFlight::new(2);
        in_flight.room().await.unwrap().sent();
        in_flight.room().await.unwrap().sent();
        assert!(in_flight.try_room().is_none());
        let waiting = tokio::time::timeout(Duration::from_millis(20), in_flight.room()).await;
        assert!(waiting.is_err(), "no room until an answer comes");
        in_flight.answered();
        assert!(in_flight.room().await.is_some());
    }

    #[tokio::test]
    async fn a_room_dropped_unsent_is_free_again() {
        let in_flight = InFlight::new(1);
        drop(in_flight.room().await.unwrap());
        assert!(in_flight.try_room().is_some());
    }

    #[tokio::test]
    async fn extra_answers_do_not_raise_the_count_past_the_cap() {
        let in_flight = InFlight::new(1);
        for _ in 0..5 {
            in_flight.answered();
        }
        in_flight.room().await.unwrap().sent();
        assert!(in_flight.try_room().is_none());
    }

    #[tokio::test]
    async fn a_closed_stream_gives_no_room() {
        let in_flight = std::sync::Arc::new(InFlight::new(1));
        in_flight.room().await.unwrap().sent();
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.room().await.is_none() })
        };
        tokio::task::yield_now().await;
        in_flight.close();
        assert!(waiter.await.unwrap(), "the waiter was let go");
        in_flight.answered();
        assert!(in_flight.try_room().is_none());
    }

    #[test]
    fn the_cap_is_held_to_what_a_semaphore_counts() {
        assert_eq!(InFlight::new(0).cap, 1);
        assert_eq!(
            InFlight::new(usize::MAX).cap,
            crate::Config::MOST_SESSION_IN_FLIGHT
        );
    }
}
