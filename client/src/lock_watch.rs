//! [`LockWatch`]: a stream of lock events that resumes where it left off.
//!
//! Every event carries its revision, the same on every member of a cluster. The watch
//! remembers the last revision it saw (an event, or the server's progress mark, which
//! comes right after the stream opens). When the stream breaks (the member died or was cut
//! off, the connection dropped, the server shut down, or this watcher fell behind the
//! server's event buffer), the watch opens again from the next revision, on the member the
//! client's route points to or the next one that answers, within the request timeout; so
//! the application sees every event once, in order, across a failover. Events it saw are
//! never sent again (a revision at or below the last one seen is dropped).
//!
//! It stops with an error when it cannot resume: no member answered within the request
//! timeout, or the member reached no longer keeps the events from the next revision
//! ([`Error::WatchCompacted`]: list the locks again and watch from the list's revision).

use fenced_proto::v1::watch_event::Kind;
use fenced_proto::v1::{WatchEvent, WatchRequest};
use fenced_types::FencingToken;
use tonic::{Code, Status, Streaming};

use crate::client::{Client, LockEvent, LockEventKind};
use crate::error::Error;

/// A stream of [`LockEvent`]s that resumes after a failure. See the module documentation.
#[derive(Debug)]
pub struct LockWatch {
    /// Opens the stream again.
    client: Client,
    /// What is watched (its start revision is set on each reopening).
    request: WatchRequest,
    /// The server's stream (`None`: broken, to be opened again).
    events: Option<Streaming<WatchEvent>>,
    /// The last revision seen: an event's, or a progress mark's.
    revision: u64,
    /// Set once the watch gave up: it yields nothing more.
    ended: bool,
    /// Streams opened again in a row without a message on any of them.
    fruitless_reopens: u32,
}

/// How many times in a row a watch opens again without receiving anything before it gives
/// up (a stream that opens always starts with at least the progress mark).
const MAX_FRUITLESS_REOPENS: u32 = 3;

impl LockWatch {
    /// Opens the watch of `request` and waits for the server's progress mark, so the
    /// watch knows its revision before anything can break.
    pub(crate) async fn open(client: Client, request: WatchRequest) -> Result<LockWatch, Error> {
        let events = client.open_watch_stream(request.clone()).await?;
        let mut watch = LockWatch {
            client,
            revision: request.start_revision.saturating_sub(1),
            request,
            events: Some(events),
            ended: false,
            fruitless_reopens: 0,
        };
        if watch.request.start_revision == 0 {
            watch.wait_for_progress().await?;
        }
        Ok(watch)
    }

    /// The last revision this watch has seen: every event it wants up to it was yielded.
    /// Watching again from one more than it (on any member) misses nothing.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The next event; `None` once the watch has ended (after the error that ended it).
    pub async fn next(&mut self) -> Option<Result<LockEvent, Error>> {
        if self.ended {
            return None;
        }
        loop {
            let Some(events) = self.events.as_mut() else {
                if let Err(error) = self.reopen().await {
                    self.ended = true;
                    return Some(Err(error));
                }
                continue;
            };
            match events.message().await {
                Ok(Some(event)) => {
                    self.fruitless_reopens = 0;
                    if event.kind == i32::from(Kind::Progress) {
                        self.revision = self.revision.max(event.revision);
                        continue;
                    }
                    if event.revision <= self.revision {
                        // Seen already (a member that resent it): never yield it twice.
                        continue;
                    }
                    self.revision = event.revision;
                    return Some(convert_event(event));
                }
                Ok(None) => self.events = None,
                Err(status) if resumable(&status) => {
                    tracing::debug!(%status, revision = self.revision, "watch broke; resuming");
                    self.events = None;
                }
                Err(status) => {
                    self.ended = true;
                    return Some(Err(Error::from(status)));
                }
            }
        }
    }

    /// Opens the stream again from the revision after the last one seen.
    async fn reopen(&mut self) -> Result<(), Error> {
        if self.fruitless_reopens >= MAX_FRUITLESS_REOPENS {
            return Err(Error::Unavailable {
                message: format!(
                    "the watch was opened again {MAX_FRUITLESS_REOPENS} times in a row and \
                     ended each time before sending anything"
                ),
            });
        }
        self.fruitless_reopens += 1;
        let mut request = self.request.clone();
        request.start_revision = self.revision + 1;
        self.events = Some(self.client.open_watch_stream(request).await?);
        Ok(())
    }

    /// Reads the progress mark a stream opened "from now" starts with.
    async fn wait_for_progress(&mut self) -> Result<(), Error> {
        let Some(events) = self.events.as_mut() else {
            return Ok(());
        };
        match events.message().await {
            Ok(Some(event)) if event.kind == i32::from(Kind::Progress) => {
                self.revision = event.revision;
                Ok(())
            }
            Ok(Some(event)) => Err(Error::Protocol {
                what: format!(
                    "a watch from now began with an event of kind {} instead of its progress mark",
                    event.kind
                ),
            }),
            Ok(None) => Err(Error::Unavailable {
                message: "the watch stream ended before it began".to_string(),
            }),
            Err(status) => Err(Error::from(status)),
        }
    }
}

/// Whether a broken stream is worth opening again: the member or the connection failed,
/// or this watcher fell behind the member's event buffer. Anything else (a refusal) is
/// the answer.
fn resumable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal => true,
        Code::ResourceExhausted => status.message().contains("fell behind"),
        _ => false,
    }
}

/// A watch event from the wire, checked.
pub(crate) fn convert_event(event: WatchEvent) -> Result<LockEvent, Error> {
    let kind = match Kind::try_from(event.kind) {
        Ok(Kind::Acquired) => LockEventKind::Acquired,
        Ok(Kind::Released) => LockEventKind::Released,
        Ok(Kind::Expired) => LockEventKind::Expired,
        _ => {
            return Err(Error::Protocol {
                what: format!("watch event of kind {}", event.kind),
            })
        }
    };
    Ok(LockEvent {
        kind,
        token: FencingToken::new(event.token).map_err(|e| Error::Protocol {
            what: format!("watch event token: {e}"),
        })?,
        lock: event.lock,
        holder: event.holder,
        revision: event.revision,
    })
}
