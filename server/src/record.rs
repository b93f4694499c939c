//! The records the store keeps in sled (and journals): how each table [`Write`] becomes a
//! key and a value, and how they read back at start.
//!
//! Records are small protobuf messages (prost derives), so the format can grow fields.
//! Keys: `t` the next token; `g` the newest journal generation sled holds; `L` + 16-byte
//! lease id a lease; `K` + name a held lock; `D` + name a lock in its lock-delay (put with
//! the expiry that starts it, deleted when it ends or the lock is granted again, so
//! delays do not pile up); `Q` + 8-byte waiter id (big-endian, so sled's order is the
//! queues' order) a queued acquirer; `r` the revision of the last event
//! ([`crate::event_log`], 8 bytes, big-endian). A cluster leader's raft entries also carry
//! their events, under the key `v`: every member publishes them as it applies the entry,
//! and none is stored.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fenced_types::{FencingToken, LeaseId, LockName};
use prost::Message;

use crate::error::{Error, RecordDamage};
use crate::event_log::RevisedEvent;
use crate::journal::JournalOp;
use crate::recovery::Recovered;
use crate::table::{
    Acquire, Event, EventKind, LeaseChoice, LeaseOrigin, RestoredDelay, RestoredLease,
    RestoredLock, RestoredWaiter, WaiterId, Write,
};

/// The next token to issue (8 bytes, big-endian).
pub(crate) const NEXT_TOKEN_KEY: &[u8] = b"t";
/// The newest journal generation whose writes sled holds (written by every checkpoint).
pub(crate) const CHECKPOINTED_KEY: &[u8] = b"g";
/// A cluster's leader epoch ([`crate::cluster::epoch`]); the lock table does not use it.
pub(crate) const EPOCH_KEY: &[u8] = b"e";
/// The revision of the last event (8 bytes, big-endian).
pub(crate) const LAST_REVISION_KEY: &[u8] = b"r";
/// An event in a cluster's raft entry (an [`EventRecord`]); never stored.
pub(crate) const EVENT_KEY: &[u8] = b"v";
const LEASE_PREFIX: u8 = b'L';
const LOCK_PREFIX: u8 = b'K';
const DELAY_PREFIX: u8 = b'D';
const WAITER_PREFIX: u8 = b'Q';

/// A lease as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct LeaseRecord {
    /// The TTL in milliseconds.
    #[prost(uint64, tag = "1")]
    ttl_ms: u64,
    /// The creator's holder name.
    #[prost(string, tag = "2")]
    holder: String,
    /// Who created the lease, if recorded ([`LeaseOrigin`]).
    #[prost(message, optional, tag = "3")]
    origin: Option<OriginRecord>,
}

/// A [`LeaseOrigin`] as stored: empty strings for what is not known.
#[derive(Clone, PartialEq, prost::Message)]
struct OriginRecord {
    /// The authenticated identity.
    #[prost(string, tag = "1")]
    identity: String,
    /// The peer's socket address.
    #[prost(string, tag = "2")]
    peer: String,
}

/// A held lock as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct LockRecord {
    /// The 16-byte lease id.
    #[prost(bytes = "vec", tag = "1")]
    lease: Vec<u8>,
    /// The grant's token.
    #[prost(uint64, tag = "2")]
    token: u64,
    /// The holder's name.
    #[prost(string, tag = "3")]
    holder: String,
    /// The lock-delay in milliseconds.
    #[prost(uint64, tag = "4")]
    lock_delay_ms: u64,
}

/// A queued acquirer as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct WaiterRecord {
    /// The lock.
    #[prost(string, tag = "1")]
    lock: String,
    /// The holder's name.
    #[prost(string, tag = "2")]
    holder: String,
    /// The TTL of the lease it creates, in milliseconds.
    #[prost(uint64, tag = "3")]
    ttl_ms: u64,
    /// The lock-delay in milliseconds.
    #[prost(uint64, tag = "4")]
    lock_delay_ms: u64,
    /// The 16-byte lease id it creates or joins.
    #[prost(bytes = "vec", tag = "5")]
    lease: Vec<u8>,
    /// Whether it joins that lease (else creates it).
    #[prost(bool, tag = "6")]
    join: bool,
    /// Who asks, if recorded.
    #[prost(message, optional, tag = "7")]
    origin: Option<OriginRecord>,
}

/// A lock-delay as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct DelayRecord {
    /// The whole lock-delay in milliseconds (restored in full from the restart).
    #[prost(uint64, tag = "1")]
    delay_ms: u64,
}

/// An event with its revision, as a cluster's raft entry carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct EventRecord {
    /// Its revision.
    #[prost(uint64, tag = "1")]
    revision: u64,
    /// 1 acquired, 2 released, 3 expired.
    #[prost(uint32, tag = "2")]
    kind: u32,
    /// The lock.
    #[prost(string, tag = "3")]
    lock: String,
    /// The holder's name.
    #[prost(string, tag = "4")]
    holder: String,
    /// The holding's token.
    #[prost(uint64, tag = "5")]
    token: u64,
    /// For a grant: whether it was a handoff to a queued acquirer.
    #[prost(bool, tag = "6")]
    handoff: bool,
    /// The 16-byte id of the holding's lease (empty in entries written before events
    /// carried it).
    #[prost(bytes = "vec", tag = "7")]
    lease: Vec<u8>,
    /// Who created that lease, if recorded.
    #[prost(message, optional, tag = "8")]
    origin: Option<OriginRecord>,
}

fn encode_origin(origin: Option<&Arc<LeaseOrigin>>) -> Option<OriginRecord> {
    origin.map(|origin| OriginRecord {
        identity: origin.identity.as_deref().unwrap_or_default().to_string(),
        peer: origin.peer.map(|peer| peer.to_string()).unwrap_or_default(),
    })
}

fn decode_origin(record: Option<OriginRecord>) -> Result<Option<Arc<LeaseOrigin>>, RecordDamage> {
    let Some(record) = record else {
        return Ok(None);
    };
    let peer = match record.peer.is_empty() {
        true => None,
        false => Some(
            record
                .peer
                .parse()
                .map_err(|_| RecordDamage::PeerAddress(record.peer.clone()))?,
        ),
    };
    let identity = (!record.identity.is_empty()).then(|| Arc::from(record.identity));
    Ok(Some(Arc::new(LeaseOrigin { identity, peer })))
}

/// The record of the last event's revision.
pub(crate) fn encode_last_revision(revision: u64) -> JournalOp {
    JournalOp {
        key: LAST_REVISION_KEY.to_vec(),
        value: Some(revision.to_be_bytes().to_vec()),
    }
}

/// An event as a raft entry carries it.
pub(crate) fn encode_event(revised: &RevisedEvent) -> JournalOp {
    let event = &revised.event;
    let kind = match event.kind {
        EventKind::Acquired => 1,
        EventKind::Released => 2,
        EventKind::Expired => 3,
    };
    let record = EventRecord {
        revision: revised.revision,
        kind,
        lock: event.lock.to_string(),
        holder: event.holder.to_string(),
        token: event.token.get(),
        handoff: event.handoff,
        lease: event
            .lease
            .map(|lease| lease.as_bytes().to_vec())
            .unwrap_or_default(),
        origin: encode_origin(event.origin.as_ref()),
    };
    JournalOp {
        key: EVENT_KEY.to_vec(),
        value: Some(record.encode_to_vec()),
    }
}

/// Reads back an event a raft entry carries, refusing anything that does not decode.
pub(crate) fn decode_event(value: &[u8]) -> Result<RevisedEvent, RecordDamage> {
    let record = EventRecord::decode(value)?;
    let kind = match record.kind {
        1 => EventKind::Acquired,
        2 => EventKind::Released,
        3 => EventKind::Expired,
        other => return Err(RecordDamage::UnknownEventKind(other)),
    };
    Ok(RevisedEvent {
        revision: record.revision,
        event: Event {
            kind,
            lock: LockName::new(record.lock)?,
            holder: record.holder.into(),
            token: FencingToken::new(record.token)?,
            handoff: record.handoff,
            lease: match record.lease.is_empty() {
                true => None,
                false => Some(lease_id(&record.lease).ok_or(RecordDamage::LeaseId)?),
            },
            origin: decode_origin(record.origin)?,
        },
    })
}

/// Reads the last event's revision from its record's value.
pub(crate) fn decode_last_revision(value: &[u8]) -> Result<u64, RecordDamage> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| RecordDamage::Length {
        len: value.len(),
        expected: 8,
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// One write as a journal operation on sled's default tree.
pub(crate) fn encode(write: Write) -> JournalOp {
    let put = |key: Vec<u8>, value: Vec<u8>| JournalOp {
        key,
        value: Some(value),
    };
    let delete = |key: Vec<u8>| JournalOp { key, value: None };
    match write {
        Write::PutLease {
            lease,
            ttl,
            holder,
            origin,
        } => {
            let record = LeaseRecord {
                ttl_ms: millis(ttl),
                holder: holder.to_string(),
                origin: encode_origin(origin.as_ref()),
            };
            put(lease_key(&lease), record.encode_to_vec())
        }
        Write::DeleteLease { lease } => delete(lease_key(&lease)),
        Write::PutLock {
            lock,
            lease,
            token,
            holder,
            lock_delay,
        } => {
            let record = LockRecord {
                lease: lease.as_bytes().to_vec(),
                token: token.get(),
                holder: holder.to_string(),
                lock_delay_ms: millis(lock_delay),
            };
            put(lock_key(&lock), record.encode_to_vec())
        }
        Write::DeleteLock { lock } => delete(lock_key(&lock)),
        Write::PutLockDelay { lock, delay } => {
            let record = DelayRecord {
                delay_ms: millis(delay),
            };
            put(delay_key(&lock), record.encode_to_vec())
        }
        Write::DeleteLockDelay { lock } => delete(delay_key(&lock)),
        Write::NextToken(token) => put(NEXT_TOKEN_KEY.to_vec(), token.to_be_bytes().to_vec()),
        Write::PutWaiter { waiter, request } => {
            let (join, lease) = match request.lease {
                LeaseChoice::New(lease) => (false, lease),
                LeaseChoice::Join(lease) => (true, lease),
            };
            let record = WaiterRecord {
                lock: request.lock.to_string(),
                holder: request.holder.to_string(),
                ttl_ms: millis(request.ttl),
                lock_delay_ms: millis(request.lock_delay),
                lease: lease.as_bytes().to_vec(),
                join,
                origin: encode_origin(request.origin.as_ref()),
            };
            put(waiter_key(waiter), record.encode_to_vec())
        }
        Write::DeleteWaiter { waiter } => delete(waiter_key(waiter)),
    }
}

/// Reads every record back, refusing anything that does not decode.
pub(crate) fn read_back(db: &sled::Db, dir: &Path) -> Result<Recovered, Error> {
    let corrupt = |key: &[u8], damage: RecordDamage| Error::CorruptRecord {
        dir: dir.to_path_buf(),
        key: String::from_utf8_lossy(key).escape_debug().to_string(),
        damage,
    };
    let mut recovered = Recovered {
        next_token: FencingToken::FIRST,
        leases: Vec::new(),
        locks: Vec::new(),
        delays: Vec::new(),
        waiters: Vec::new(),
        last_revision: 0,
    };
    for entry in db.iter() {
        let (key, value) = entry.map_err(|source| Error::OpenSled {
            dir: dir.to_path_buf(),
            doing: "reading the records",
            source,
        })?;
        match key.first() {
            _ if &*key == CHECKPOINTED_KEY || &*key == EPOCH_KEY => {}
            _ if &*key == LAST_REVISION_KEY => {
                recovered.last_revision =
                    decode_last_revision(&value).map_err(|damage| corrupt(&key, damage))?;
            }
            _ if &*key == NEXT_TOKEN_KEY => {
                let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| {
                    let len = value.len();
                    corrupt(&key, RecordDamage::Length { len, expected: 8 })
                })?;
                recovered.next_token =
                    FencingToken::from_be_bytes(bytes).map_err(|e| corrupt(&key, e.into()))?;
            }
            Some(&LEASE_PREFIX) => {
                let lease =
                    lease_id(&key[1..]).ok_or_else(|| corrupt(&key, RecordDamage::LeaseId))?;
                let record =
                    LeaseRecord::decode(value.as_ref()).map_err(|e| corrupt(&key, e.into()))?;
                let origin =
                    decode_origin(record.origin).map_err(|damage| corrupt(&key, damage))?;
                recovered.leases.push(RestoredLease {
                    lease,
                    ttl: Duration::from_millis(record.ttl_ms),
                    origin,
                });
            }
            Some(&LOCK_PREFIX) => {
                let lock = lock_name(&key[1..]).map_err(|damage| corrupt(&key, damage))?;
                let record =
                    LockRecord::decode(value.as_ref()).map_err(|e| corrupt(&key, e.into()))?;
                let lease =
                    lease_id(&record.lease).ok_or_else(|| corrupt(&key, RecordDamage::LeaseId))?;
                let token = FencingToken::new(record.token).map_err(|e| corrupt(&key, e.into()))?;
                recovered.locks.push(RestoredLock {
                    lock,
                    lease,
                    token,
                    holder: record.holder.into(),
                    lock_delay: Duration::from_millis(record.lock_delay_ms),
                });
            }
            Some(&DELAY_PREFIX) => {
                let lock = lock_name(&key[1..]).map_err(|damage| corrupt(&key, damage))?;
                let record =
                    DelayRecord::decode(value.as_ref()).map_err(|e| corrupt(&key, e.into()))?;
                recovered.delays.push(RestoredDelay {
                    lock,
                    delay: Duration::from_millis(record.delay_ms),
                });
            }
            Some(&WAITER_PREFIX) => {
                let id: [u8; 8] = key[1..].try_into().map_err(|_| {
                    corrupt(
                        &key,
                        RecordDamage::Length {
                            len: key.len() - 1,
                            expected: 8,
                        },
                    )
                })?;
                let record =
                    WaiterRecord::decode(value.as_ref()).map_err(|e| corrupt(&key, e.into()))?;
                let request = decode_waiter(record).map_err(|damage| corrupt(&key, damage))?;
                recovered.waiters.push(RestoredWaiter {
                    waiter: WaiterId(u64::from_be_bytes(id)),
                    request,
                });
            }
            _ => return Err(corrupt(&key, RecordDamage::UnknownKey)),
        }
    }
    Ok(recovered)
}

/// A stored waiter's request, refusing anything that breaks the protocol's rules.
fn decode_waiter(record: WaiterRecord) -> Result<Acquire, RecordDamage> {
    let lease = lease_id(&record.lease).ok_or(RecordDamage::LeaseId)?;
    Ok(Acquire {
        lock: LockName::new(record.lock)?,
        holder: record.holder.into(),
        ttl: Duration::from_millis(record.ttl_ms),
        lock_delay: Duration::from_millis(record.lock_delay_ms),
        lease: match record.join {
            true => LeaseChoice::Join(lease),
            false => LeaseChoice::New(lease),
        },
        wait: true,
        origin: decode_origin(record.origin)?,
    })
}

fn waiter_key(waiter: WaiterId) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(WAITER_PREFIX);
    key.extend_from_slice(&waiter.0.to_be_bytes());
    key
}

fn lease_key(lease: &LeaseId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(LEASE_PREFIX);
    key.extend_from_slice(lease.as_bytes());
    key
}

fn lock_key(lock: &LockName) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + lock.as_bytes().len());
    key.push(LOCK_PREFIX);
    key.extend_from_slice(lock.as_bytes());
    key
}

fn delay_key(lock: &LockName) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + lock.as_bytes().len());
    key.push(DELAY_PREFIX);
    key.extend_from_slice(lock.as_bytes());
    key
}

fn lock_name(bytes: &[u8]) -> Result<LockName, RecordDamage> {
    let name = String::from_utf8(bytes.to_vec())?;
    Ok(LockName::new(name)?)
}

fn lease_id(bytes: &[u8]) -> Option<LeaseId> {
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(LeaseId::from_bytes(bytes))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
