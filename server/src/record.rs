//! The records the store keeps in sled (and journals): how each table [`Write`] becomes a
//! key and a value, and how they read back at start.
//!
//! Records are small protobuf messages (prost derives), so the format can grow fields.
//! Keys: `t` the next token; `g` the newest journal generation sled holds; `L` + 16-byte
//! lease id a lease; `K` + name a held lock; `D` + name a lock in its lock-delay (put with
//! the expiry that starts it, deleted when it ends or the lock is granted again, so
//! delays do not pile up).

use std::path::Path;
use std::time::Duration;

use fenced_types::{FencingToken, LeaseId, LockName};
use prost::Message;

use crate::error::{Error, RecordDamage};
use crate::journal::JournalOp;
use crate::recovery::Recovered;
use crate::table::{RestoredDelay, RestoredLease, RestoredLock, Write};

/// The next token to issue (8 bytes, big-endian).
pub(crate) const NEXT_TOKEN_KEY: &[u8] = b"t";
/// The newest journal generation whose writes sled holds (written by every checkpoint).
pub(crate) const CHECKPOINTED_KEY: &[u8] = b"g";
/// A cluster's leader epoch ([`crate::cluster::epoch`]); the lock table does not use it.
pub(crate) const EPOCH_KEY: &[u8] = b"e";
const LEASE_PREFIX: u8 = b'L';
const LOCK_PREFIX: u8 = b'K';
const DELAY_PREFIX: u8 = b'D';

/// A lease as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct LeaseRecord {
    /// The TTL in milliseconds.
    #[prost(uint64, tag = "1")]
    ttl_ms: u64,
    /// The creator's holder name.
    #[prost(string, tag = "2")]
    holder: String,
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

/// A lock-delay as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct DelayRecord {
    /// The whole lock-delay in milliseconds (restored in full from the restart).
    #[prost(uint64, tag = "1")]
    delay_ms: u64,
}

/// One write as a journal operation on sled's default tree.
pub(crate) fn encode(write: Write) -> JournalOp {
    let put = |key: Vec<u8>, value: Vec<u8>| JournalOp {
        key,
        value: Some(value),
    };
    let delete = |key: Vec<u8>| JournalOp { key, value: None };
    match write {
        Write::PutLease { lease, ttl, holder } => {
            let record = LeaseRecord {
                ttl_ms: millis(ttl),
                holder: holder.to_string(),
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
    };
    for entry in db.iter() {
        let (key, value) = entry.map_err(|source| Error::OpenSled {
            dir: dir.to_path_buf(),
            doing: "reading the records",
            source,
        })?;
        match key.first() {
            _ if &*key == CHECKPOINTED_KEY || &*key == EPOCH_KEY => {}
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
                recovered.leases.push(RestoredLease {
                    lease,
                    ttl: Duration::from_millis(record.ttl_ms),
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
            _ => return Err(corrupt(&key, RecordDamage::UnknownKey)),
        }
    }
    Ok(recovered)
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
