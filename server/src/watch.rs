//! [`Watchers`]: the `Watch` streams, at most `max_watchers` at a time, each fed from the
//! node's [`EventLog`].
//!
//! A stream sends the kept events from the revision the watcher starts at (if it gave
//! one), then one `PROGRESS` message carrying the revision it is caught up to (so a
//! watcher that saw no event it wants still knows where to resume), then every new event
//! its filter wants, each with its revision ([`crate::event_log`] says why nothing is
//! missed or repeated).
//!
//! No watcher, however slow, makes the server's memory grow without bound:
//! - the event log's live feed is a ring of a fixed number of events (4,096) shared by
//!   every watcher; a receiver is only a position in it;
//! - each watcher's own buffer is a channel of [`BUFFER`] events, and past it HTTP/2 flow
//!   control holds the rest;
//! - a watcher that falls more than the ring behind loses its place: after the events
//!   already in its buffer it gets `RESOURCE_EXHAUSTED` ("fell behind and missed N events;
//!   watch again from revision R") and its stream ends, so it never misses an event
//!   silently;
//! - the number of watchers is capped, in all and (`max_watchers_per_identity`) for each
//!   authenticated identity, so one tenant cannot take every place; a stream that ends
//!   (the client closed it, went away, or fell behind) gives its places back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fenced_proto::v1 as pb;
use fenced_types::LockName;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::access::Caller;
use crate::convert;
use crate::event_log::{EventLog, Subscription};
use crate::policy::Permission;
use crate::quota::{PerIdentity, Place};
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
    /// Those the inner filter wants, of the locks the caller may read under the policy
    /// file ([`crate::access`]).
    Readable(Box<Filter>, Caller),
}

impl Filter {
    fn wants(&self, event: &Event) -> bool {
        match self {
            Filter::Lock(lock) => event.lock == *lock,
            Filter::Prefix(prefix) => event.lock.as_str().starts_with(prefix.as_str()),
            Filter::Readable(inner, caller) => {
                inner.wants(event) && caller.may(Permission::Read, event.lock.as_str())
            }
        }
    }
}

/// What a per-identity refusal calls a watcher's place, and the setting that limits them.
const WATCHES: &str = "concurrent Watch streams";
const WATCHES_SETTING: &str = "max_watchers_per_identity";

/// A watcher's stream of events, as the `Watch` rpc answers.
pub type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

/// The open `Watch` streams and their cap. Cheap to clone: clones share the count.
#[derive(Debug, Clone)]
pub struct Watchers {
    /// How many streams are open.
    open: Arc<AtomicUsize>,
    /// How many may be.
    limit: usize,
    /// How many streams each authenticated identity has open, and may.
    per_identity: PerIdentity,
}

impl Watchers {
    /// No watchers yet; at most `limit` at a time.
    pub fn new(limit: usize) -> Self {
        Watchers {
            open: Arc::new(AtomicUsize::new(0)),
            limit,
            per_identity: PerIdentity::new(0, WATCHES, WATCHES_SETTING),
        }
    }

    /// At most `per_identity` streams open for one authenticated identity (0: no limit
    /// beyond the total).
    pub fn per_identity(mut self, per_identity: usize) -> Self {
        self.per_identity = PerIdentity::new(per_identity, WATCHES, WATCHES_SETTING);
        self
    }

    /// How many streams are open now.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Opens a stream of the events of `subscription` that `filter` wants, from revision
    /// `from` on (0: from the subscription's start), or refuses with `RESOURCE_EXHAUSTED`
    /// when `limit` streams are open already. The stream holds its place until it ends.
    pub fn open(
        &self,
        subscription: Subscription,
        from: u64,
        filter: Filter,
    ) -> Result<WatchStream, Status> {
        self.open_as(None, subscription, from, filter)
    }

    /// As [`Watchers::open`], for a caller authenticated as `identity`, which also may have
    /// at most the per-identity number of streams open.
    pub fn open_as(
        &self,
        identity: Option<Arc<str>>,
        subscription: Subscription,
        from: u64,
        filter: Filter,
    ) -> Result<WatchStream, Status> {
        let identity_slot = self.per_identity.take(identity.as_ref())?;
        let slot = self.take_slot().ok_or_else(|| {
            crate::telemetry::telemetry().refused_exhausted();
            convert::exhausted(format!(
                "too many watchers: the limit is {} concurrent Watch streams (max_watchers)",
                self.limit
            ))
        })?;
        let (sender, receiver) = mpsc::channel(BUFFER);
        tokio::spawn(forward(
            subscription,
            from,
            filter,
            sender,
            (slot, identity_slot),
        ));
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
/// stops publishing: the backlog, the progress mark, then the live feed.
async fn forward(
    subscription: Subscription,
    from: u64,
    filter: Filter,
    sender: mpsc::Sender<Result<pb::WatchEvent, Status>>,
    slot: (Slot, Option<Place>),
) {
    let Subscription {
        backlog,
        mut live,
        last_published,
    } = subscription;
    // Every revision up to this one has been sent (those the filter wants) or skipped.
    let mut done = last_published.max(from.saturating_sub(1));
    let sent_backlog = async {
        for event in &backlog {
            if filter.wants(&event.event) {
                sender.send(Ok(convert::watch_event(event))).await?;
            }
        }
        sender.send(Ok(convert::watch_progress(done))).await
    };
    if sent_backlog.await.is_err() {
        return;
    }
    loop {
        let event = tokio::select! {
            _ = sender.closed() => break,
            event = live.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Closed) => break,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Never drop events silently: the watcher must watch again from `done + 1`.
                let _ = sender.send(Err(fell_behind(missed, done + 1))).await;
                break;
            }
        };
        if event.revision <= done {
            continue;
        }
        done = event.revision;
        if filter.wants(&event.event)
            && sender.send(Ok(convert::watch_event(&event))).await.is_err()
        {
            break;
        }
    }
    // The place is free before the watcher sees its stream end.
    drop(slot);
}

/// What a watcher that lost its place in the event ring gets.
fn fell_behind(missed: u64, resume_from: u64) -> Status {
    convert::exhausted(format!(
        "watcher fell behind and missed {missed} events; watch again from revision {resume_from}"
    ))
}

/// Opens `log` for a watcher that starts at revision `from` (0: from now), or the
/// refusal when the events from there are no longer kept.
pub fn subscribe(log: &EventLog, from: u64) -> Result<Subscription, Status> {
    let since = match from {
        0 => crate::event_log::Since::Now,
        revision => crate::event_log::Since::Revision(revision),
    };
    log.subscribe(since)
        .map_err(|compacted| convert::compacted(&compacted))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fenced_types::FencingToken;
    use tokio_stream::StreamExt;
    use tonic::Code;

    use super::*;
    use crate::event_log::{RevisedEvent, Since};
    use crate::table::EventKind;

    fn event(revision: u64, lock: &str) -> RevisedEvent {
        RevisedEvent {
            revision,
            event: Event {
                kind: EventKind::Acquired,
                lock: LockName::new(lock).unwrap(),
                holder: Arc::from("h"),
                token: FencingToken::new(revision).unwrap(),
                handoff: false,
                lease: None,
                origin: None,
            },
        }
    }

    fn now(log: &EventLog) -> Subscription {
        log.subscribe(Since::Now).unwrap()
    }

    async fn progress(stream: &mut WatchStream) -> u64 {
        let mark = stream.next().await.unwrap().unwrap();
        assert_eq!(mark.kind(), pb::watch_event::Kind::Progress, "{mark:?}");
        mark.revision
    }

    // checks: S6 (a refused watch names the limit; the others keep being served)
    #[tokio::test]
    async fn the_cap_refuses_one_more_and_a_closed_stream_frees_its_place() {
        let log = EventLog::new(16, 0);
        let watchers = Watchers::new(2);
        let all = || Filter::Prefix(String::new());
        let first = watchers.open(now(&log), 0, all()).unwrap();
        let mut second = watchers.open(now(&log), 0, all()).unwrap();
        let refused = watchers.open(now(&log), 0, all()).unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.message().contains("limit is 2"), "{refused:?}");
        assert_eq!(watchers.open_count(), 2);

        drop(first);
        assert_eq!(progress(&mut second).await, 0);
        log.publish([event(1, "a")]);
        let seen = second.next().await.unwrap().unwrap();
        assert_eq!((seen.lock.as_str(), seen.revision), ("a", 1));
        // The first stream's task saw its receiver go and gave its place back.
        while watchers.open_count() != 1 {
            tokio::task::yield_now().await;
        }
        let _third = watchers.open(now(&log), 0, all()).unwrap();
    }

    // checks: S6 (memory stays bounded; a lagging watcher is told, never silently skipped)
    #[tokio::test]
    async fn a_watcher_that_falls_behind_the_ring_is_told_and_its_stream_ends() {
        let log = EventLog::new(4, 0);
        let watchers = Watchers::new(1);
        let mut stream = watchers
            .open(now(&log), 0, Filter::Prefix("w/".into()))
            .unwrap();
        assert_eq!(progress(&mut stream).await, 0);

        // In step, it sees what it wants and nothing else.
        log.publish([event(1, "other"), event(2, "w/a")]);
        assert_eq!(stream.next().await.unwrap().unwrap().revision, 2);

        // Ten events while it reads nothing overrun the ring of four: it lost six.
        log.publish((3..13).map(|revision| event(revision, "w/b")));
        let told = stream.next().await.unwrap().unwrap_err();
        assert_eq!(told.code(), Code::ResourceExhausted);
        assert!(told.message().contains("missed 6 events"), "{told:?}");
        assert!(told.message().contains("from revision 3"), "{told:?}");
        assert!(stream.next().await.is_none(), "the stream ends");
        assert_eq!(watchers.open_count(), 0, "its place is free");
    }

    // checks: W1 (a resumed watch: the kept events it wants, the progress mark, then live
    // events, each revision once)
    #[tokio::test]
    async fn a_resumed_watch_sends_the_backlog_then_the_mark_then_live_events() {
        let log = EventLog::new(16, 0);
        log.publish([event(1, "w/a"), event(2, "other"), event(3, "w/b")]);
        let watchers = Watchers::new(1);
        let mut stream = watchers
            .open(subscribe(&log, 2).unwrap(), 2, Filter::Prefix("w/".into()))
            .unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().revision, 3);
        assert_eq!(progress(&mut stream).await, 3);
        log.publish([event(3, "w/b"), event(4, "w/c")]);
        assert_eq!(stream.next().await.unwrap().unwrap().revision, 4);

        let refused = subscribe(&EventLog::new(2, 10), 5).unwrap_err();
        assert_eq!(refused.code(), Code::OutOfRange);
        assert!(
            refused.message().contains("oldest kept is 11"),
            "{refused:?}"
        );
    }

    // checks: W1 (a watcher ahead of this member, which has not applied its revision yet,
    // is sent nothing it saw already)
    #[tokio::test]
    async fn a_watch_ahead_of_this_member_skips_what_it_saw_elsewhere() {
        let log = EventLog::new(16, 0);
        log.publish([event(1, "a")]);
        let watchers = Watchers::new(1);
        let mut stream = watchers
            .open(
                subscribe(&log, 4).unwrap(),
                4,
                Filter::Prefix(String::new()),
            )
            .unwrap();
        assert_eq!(progress(&mut stream).await, 3);
        log.publish([event(2, "b"), event(3, "c"), event(4, "d")]);
        assert_eq!(stream.next().await.unwrap().unwrap().revision, 4);
    }
}
