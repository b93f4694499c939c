//! [`Watchers`]: the `Watch` streams, at most `max_watchers` at a time, each fed from the
//! engine's event broadcast.
//!
//! No watcher, however slow, makes the server's memory grow without bound:
//! - the engine's broadcast channel is a ring of a fixed number of events (4,096) shared by
//!   every watcher; a receiver is only a position in it;
//! - each watcher's own buffer is a channel of [`BUFFER`] events, and past it HTTP/2 flow
//!   control holds the rest;
//! - a watcher that falls more than the ring behind loses its place: after the events
//!   already in its buffer it gets `RESOURCE_EXHAUSTED` ("fell behind and missed N events;
//!   list and watch again") and its stream ends, so it never misses an event silently;
//! - the number of watchers is capped, and a stream that ends (the client closed it, went
//!   away, or fell behind) gives its place back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fenced_proto::v1 as pb;
use fenced_types::LockName;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::convert;
use crate::table::Event;

/// Events one watcher may have forwarded but not yet sent, on top of the shared ring.
pub const BUFFER: usize = 256;

/// Which events a watcher wants.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Exactly this lock's.
    Lock(LockName),
    /// Those of every lock whose name starts with this (empty: all).
    Prefix(String),
}

impl Filter {
    fn wants(&self, event: &Event) -> bool {
        match self {
            Filter::Lock(lock) => event.lock == *lock,
            Filter::Prefix(prefix) => event.lock.as_str().starts_with(prefix.as_str()),
        }
    }
}

/// A watcher's stream of events, as the `Watch` rpc answers.
pub type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

/// The open `Watch` streams and their cap. Cheap to clone: clones share the count.
#[derive(Debug, Clone)]
pub struct Watchers {
    /// How many streams are open.
    open: Arc<AtomicUsize>,
    /// How many may be.
    limit: usize,
}

impl Watchers {
    /// No watchers yet; at most `limit` at a time.
    pub fn new(limit: usize) -> Self {
        Watchers {
            open: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// How many streams are open now.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Opens a stream of the events from `events` that `filter` wants, or refuses with
    /// `RESOURCE_EXHAUSTED` when `limit` streams are open already. The stream holds its
    /// place until it ends.
    pub fn open(
        &self,
        events: broadcast::Receiver<Event>,
        filter: Filter,
    ) -> Result<WatchStream, Status> {
        let slot = self.take_slot().ok_or_else(|| {
            crate::telemetry::telemetry().refused_exhausted();
            convert::exhausted(format!(
                "too many watchers: the limit is {} concurrent Watch streams (max_watchers)",
                self.limit
            ))
        })?;
        let (sender, receiver) = mpsc::channel(BUFFER);
        tokio::spawn(forward(events, filter, sender, slot));
        Ok(ReceiverStream::new(receiver))
    }

    fn take_slot(&self) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.limit).then_some(open + 1)
            })
            .ok()
            .map(|_| Slot(self.open.clone()))
    }
}

/// One watcher's place; given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Forwards the wanted events until the watcher goes away, falls behind, or the server
/// stops publishing.
async fn forward(
    mut events: broadcast::Receiver<Event>,
    filter: Filter,
    sender: mpsc::Sender<Result<pb::WatchEvent, Status>>,
    slot: Slot,
) {
    loop {
        let event = tokio::select! {
            _ = sender.closed() => break,
            event = events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Closed) => break,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Never drop events silently: the watcher must re-read and re-watch.
                let _ = sender.send(Err(fell_behind(missed))).await;
                break;
            }
        };
        if filter.wants(&event) && sender.send(Ok(convert::watch_event(&event))).await.is_err() {
            break;
        }
    }
    // The place is free before the watcher sees its stream end.
    drop(slot);
}

/// What a watcher that lost its place in the event ring gets.
fn fell_behind(missed: u64) -> Status {
    convert::exhausted(format!(
        "watcher fell behind and missed {missed} events; list and watch again"
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fenced_types::FencingToken;
    use tokio_stream::StreamExt;
    use tonic::Code;

    use super::*;
    use crate::table::EventKind;

    fn event(lock: &str, token: u64) -> Event {
        Event {
            kind: EventKind::Acquired,
            lock: LockName::new(lock).unwrap(),
            holder: Arc::from("h"),
            token: FencingToken::new(token).unwrap(),
            handoff: false,
        }
    }

    // checks: S6 (a refused watch names the limit; the others keep being served)
    #[tokio::test]
    async fn the_cap_refuses_one_more_and_a_closed_stream_frees_its_place() {
        let (publish, _) = broadcast::channel(16);
        let watchers = Watchers::new(2);
        let all = || Filter::Prefix(String::new());
        let first = watchers.open(publish.subscribe(), all()).unwrap();
        let mut second = watchers.open(publish.subscribe(), all()).unwrap();
        let refused = watchers.open(publish.subscribe(), all()).unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.message().contains("limit is 2"), "{refused:?}");
        assert_eq!(watchers.open_count(), 2);

        drop(first);
        publish.send(event("a", 1)).unwrap();
        let seen = second.next().await.unwrap().unwrap();
        assert_eq!(seen.lock, "a");
        // The first stream's task saw its receiver go and gave its place back.
        while watchers.open_count() != 1 {
            tokio::task::yield_now().await;
        }
        let _third = watchers.open(publish.subscribe(), all()).unwrap();
    }

    // checks: S6 (memory stays bounded; a lagging watcher is told, never silently skipped)
    #[tokio::test]
    async fn a_watcher_that_falls_behind_the_ring_is_told_and_its_stream_ends() {
        let (publish, _) = broadcast::channel(4);
        let watchers = Watchers::new(1);
        let mut stream = watchers
            .open(publish.subscribe(), Filter::Prefix("w/".into()))
            .unwrap();

        // In step, it sees what it wants and nothing else.
        publish.send(event("other", 1)).unwrap();
        publish.send(event("w/a", 2)).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().token, 2);

        // Ten events while it reads nothing overrun the ring of four: it lost six.
        for token in 3..13 {
            publish.send(event("w/b", token)).unwrap();
        }
        let told = stream.next().await.unwrap().unwrap_err();
        assert_eq!(told.code(), Code::ResourceExhausted);
        assert!(told.message().contains("missed 6 events"), "{told:?}");
        assert!(stream.next().await.is_none(), "the stream ends");
        assert_eq!(watchers.open_count(), 0, "its place is free");
    }
}
