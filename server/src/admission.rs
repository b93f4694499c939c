//! [`ConnectionLimit`]: at most so many connections open at once on one listener, so that
//! one client (or many) cannot take every file descriptor and every byte of buffer the
//! server has; and [`accept`], an accept that rides out the listener's errors.
//!
//! A connection past the limit is accepted and closed at once: its client learns at once
//! that it was refused (instead of waiting in the kernel's backlog), and the log names its
//! address. The open connections are not disturbed, and each that closes gives its slot
//! back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::throttle::Throttle;

/// The slots of one listener's connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    /// Which listener, for the log ("gRPC", "framed session").
    listener: &'static str,
    /// The limit.
    max: usize,
    /// One permit per connection that may still open.
    slots: Arc<Semaphore>,
    /// Limits the warnings about refused connections to one a second.
    refusals: Arc<Throttle>,
    /// The listener's `fenced_connections_open` gauge.
    gauge: Gauge,
}

/// A connection's place under its listener's [`ConnectionLimit`], given back when dropped
/// (when the connection closes).
#[derive(Debug)]
pub struct Slot {
    /// The semaphore permit that is the place.
    _permit: OwnedSemaphorePermit,
    /// The listener's open connections gauge, taken down when the slot is given back.
    gauge: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

impl ConnectionLimit {
    /// At most `max` connections at once on the listener called `listener` (a name for
    /// the log).
    pub fn new(listener: &'static str, max: usize) -> ConnectionLimit {
        // Far above any file-descriptor limit; the semaphore takes no more.
        let max = max.min(Semaphore::MAX_PERMITS);
        ConnectionLimit {
            listener,
            max,
            slots: Arc::new(Semaphore::new(max)),
            refusals: Arc::new(Throttle::new(Duration::from_secs(1))),
            gauge: crate::telemetry::connections_gauge(listener),
        }
    }

    /// A slot for the connection just accepted from `peer`, to be held for as long as it
    /// is open; `None` when every slot is taken: the caller then closes the connection at
    /// once, and a warning names the peer (at most one a second, counting the others).
    pub fn admit(&self, peer: SocketAddr) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.gauge.increment(1.0);
                Some(Slot {
                    _permit: permit,
                    gauge: self.gauge.clone(),
                })
            }
            Err(_no_slot) => {
                if let Some(also_refused) = self.refusals.admit(Instant::now()) {
                    tracing::warn!(
                        listener = self.listener,
                        %peer,
                        limit = self.max,
                        also_refused,
                        "connection refused: the listener has its most connections open \
                         (--max-connections)"
                    );
                }
                None
            }
        }
    }

    /// How many connections hold a slot now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

/// The next connection on `listener` (called `name` in the log), with `TCP_NODELAY` set:
/// each message is written whole and answered at once, so Nagle's algorithm would only add
/// delay. An accept that fails (out of file descriptors, say) is logged and retried after
/// a short pause, rather than in a busy loop or by stopping the listener.
pub async fn accept(listener: &TcpListener, name: &'static str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(listener = name, %peer, %error, "cannot set TCP_NODELAY");
                }
                return (stream, peer);
            }
            Err(error) => {
                tracing::warn!(listener = name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_given_back_when_dropped() {
        let limit = ConnectionLimit::new("test", 2);
        let peer = SocketAddr::from(([127, 0, 0, 1], 9));
        let first = limit.admit(peer).expect("a first slot");
        let second = limit.admit(peer).expect("a second slot");
        assert_eq!(limit.open(), 2);
        assert!(
            limit.admit(peer).is_none(),
            "a third connection past the limit of 2"
        );
        drop(first);
        assert_eq!(limit.open(), 1);
        let third = limit.admit(peer).expect("the freed slot");
        assert!(limit.admit(peer).is_none());
        drop((second, third));
        assert_eq!(limit.open(), 0);
    }
}
