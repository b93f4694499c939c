//! Recalling a member's recent events when it starts: the events carried by the applied
//! entries its raft log still holds, for the [`EventLog`](crate::event_log::EventLog),
//! so that a watcher that resumes on a restarted member gets what it missed instead of
//! being told to list again.
//!
//! The state machine does not store events (they travel in the entries and are published
//! as entries are applied, [`crate::cluster::state_machine`]), but the raft log keeps every
//! entry after the last purge. [`applied_events`] reads them out of those entries as apply
//! did, skipping what apply skipped: a batch of a leader's term that had ended
//! ([`crate::cluster::epoch`]). Which batches apply admitted depends on the image's epoch
//! as of each entry. The image holds only its current epoch, which is the epoch all
//! through the recalled entries if none of them is a barrier (only barriers set it); if
//! some are, the epoch before the first barrier is unknown here, and the events before it
//! are left out. [`EventLog::recall`](crate::event_log::EventLog::recall) then keeps only
//! a gapless run of revisions that ends at the image's last revision, so a recall that
//! does not match what was applied keeps nothing rather than something wrong.

use openraft::EntryPayload;

use crate::cluster::epoch;
use crate::cluster::types::{CommitBatch, Entry};
use crate::error::RecordDamage;
use crate::event_log::RevisedEvent;
use crate::journal::JournalBatch;
use crate::record::{decode_event, EPOCH_KEY, EVENT_KEY};

/// How many of the last applied entries a member reads back at start for their events: at
/// least as many as the event log keeps events (an entry that carries events carries one
/// or more).
pub const RECALLED_ENTRIES: u64 = crate::event_log::DEFAULT_CAPACITY as u64;

/// An event in a recalled entry that apply would have refused too.
#[derive(Debug, thiserror::Error)]
pub enum RecallError {
    /// The event op has no value.
    #[error("the event op in log entry {index} has no value")]
    NoValue {
        /// The entry's log index.
        index: u64,
    },
    /// The event does not decode.
    #[error("the event in log entry {index} does not decode: {damage}")]
    Damaged {
        /// The entry's log index.
        index: u64,
        /// What is wrong with it.
        damage: RecordDamage,
    },
}

/// The events of `entries` (applied, in log order) that apply published, given the image's
/// current epoch: see the module documentation.
pub fn applied_events(
    entries: &[Entry],
    image_epoch: Option<&[u8]>,
) -> Result<Vec<RevisedEvent>, RecallError> {
    let batches = || {
        entries.iter().filter_map(|entry| match &entry.payload {
            EntryPayload::Normal(CommitBatch(batch)) => Some((entry.log_id.index, batch)),
            EntryPayload::Blank | EntryPayload::Membership(_) => None,
        })
    };
    let first_barrier = batches().position(|(_, batch)| is_barrier(batch));
    let (skip, mut current_epoch) = match first_barrier {
        // Its own epoch op sets the epoch before anything after it is judged.
        Some(position) => (position, None),
        None => (0, image_epoch.map(<[u8]>::to_vec)),
    };
    let mut events = Vec::new();
    for (index, batch) in batches().skip(skip) {
        if !epoch::admits(batch, current_epoch.as_deref()) {
            continue;
        }
        for op in &batch.ops {
            if op.key == EVENT_KEY {
                let value = op.value.as_deref().ok_or(RecallError::NoValue { index })?;
                let event =
                    decode_event(value).map_err(|damage| RecallError::Damaged { index, damage })?;
                events.push(event);
            } else if op.key == EPOCH_KEY {
                current_epoch.clone_from(&op.value);
            }
        }
    }
    Ok(events)
}

/// Whether `batch` starts an epoch: it sets the image's epoch and expects none, so apply
/// always admits it.
fn is_barrier(batch: &JournalBatch) -> bool {
    epoch::expectation_of(batch).is_none() && batch.ops.iter().any(|op| op.key == EPOCH_KEY)
}
