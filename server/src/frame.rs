//! The record framing shared by the [journal](crate::journal) and the cluster's
//! [raft log](crate::cluster::log_store): how a record is laid out, and the one rule that
//! tells a record damaged on disk from the torn last append a crash leaves behind.
//!
//! A record is `length (u32 LE) | crc32(length) (u32 LE) | crc32(length ‖ payload) (u32 LE)
//! | payload`. The first check makes the length trustworthy on its own (it says where the
//! record ends even when its payload is damaged); the second covers the length and the
//! payload together. Records follow each other; a file's records end where only zeros (or
//! the end of the file) are left.
//!
//! `scan` reads a file's records and applies the rule the `journal` module documents in
//! full: the first record at offset X that is not valid is corruption, refused with X, if a
//! valid record starts anywhere after it, if its length passes its own check and a byte
//! past its end is not zero, or if it passes its checksum but does not decode; otherwise it
//! is the torn last append. The rule holds for any writer that writes nothing after an
//! append until that append is synced. Whether a torn tail may stand where it was found
//! (only in the newest file) is the caller's to check.

/// A record's header: its length, the length's check, the record's checksum.
pub(crate) const HEADER_BYTES: usize = 12;

/// How a file's records are damaged beyond what a crash leaves behind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameDamage {
    /// The record fails its check, and a valid record follows it.
    #[error(
        "the record there fails its check, but a valid record follows at byte {next}: only \
         the last append can be torn"
    )]
    RecordFollows {
        /// Where the valid record starts.
        next: u64,
    },
    /// The record fails its check, and bytes past its end are not zero.
    #[error(
        "the record there fails its check, and byte {at}, past its end at byte {end}, is not \
         zero: nothing is written after the last append"
    )]
    DataAfterRecord {
        /// Where the record ends, by its (checked) length.
        end: u64,
        /// The first non-zero byte after it.
        at: u64,
    },
    /// The record passes its checksum but its payload does not decode.
    #[error("the record there passes its checksum but does not decode: {source}")]
    Undecodable {
        /// What prost said.
        #[source]
        source: prost::DecodeError,
    },
}

/// One valid record found by [`scan`].
pub(crate) struct Framed<T> {
    /// Where the record starts in the file.
    pub offset: u64,
    /// Its length with its header.
    pub len: u64,
    /// The decoded payload.
    pub value: T,
}

/// What one file's records are: the valid ones, and the offset and non-zero extent of a
/// torn last append, if the file ends with one.
pub(crate) struct Scanned<T> {
    /// The valid records, in order.
    pub records: Vec<Framed<T>>,
    /// `(offset, bytes)` of a torn last append.
    pub torn: Option<(u64, u64)>,
}

/// Frames `payload_len` bytes written by `write_payload` into `buffer` (cleared first).
pub(crate) fn frame<E>(
    buffer: &mut Vec<u8>,
    length: u32,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    buffer.clear();
    buffer.extend_from_slice(&length.to_le_bytes());
    buffer.extend_from_slice(&length_check(length).to_le_bytes());
    buffer.extend_from_slice(&[0; 4]);
    write_payload(buffer)?;
    let crc = checksum(length, &buffer[HEADER_BYTES..]);
    buffer[8..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads the records of `bytes` (a whole file) from offset `start` by the rule in the
/// module documentation; the offset and nature of the damage if it is corrupt.
pub(crate) fn scan<T>(
    bytes: &[u8],
    start: usize,
    decode: impl Fn(&[u8]) -> Result<T, prost::DecodeError>,
) -> Result<Scanned<T>, (u64, FrameDamage)> {
    let mut scanned = Scanned {
        records: Vec::new(),
        torn: None,
    };
    let mut at = start;
    while at < bytes.len() {
        match record(&bytes[at..], &decode) {
            Record::Valid { batch, len } => {
                scanned.records.push(Framed {
                    offset: at as u64,
                    len: len as u64,
                    value: batch,
                });
                at += len;
            }
            Record::End => break,
            Record::Bad { end, undecodable } => {
                let offset = at as u64;
                if let Some(source) = undecodable {
                    return Err((offset, FrameDamage::Undecodable { source }));
                }
                if let Some(next) = next_valid_record(bytes, at + 1, &decode) {
                    let next = next as u64;
                    return Err((offset, FrameDamage::RecordFollows { next }));
                }
                if let Some(end) = end.map(|len| at.saturating_add(len)) {
                    let after = bytes.get(end..).unwrap_or_default();
                    if let Some(first) = after.iter().position(|byte| *byte != 0) {
                        let (end, at) = (end as u64, (end + first) as u64);
                        return Err((offset, FrameDamage::DataAfterRecord { end, at }));
                    }
                }
                let torn = nonzero_extent(&bytes[at..]) as u64;
                scanned.torn = Some((offset, torn));
                break;
            }
        }
    }
    Ok(scanned)
}

/// What starts at an offset of a file.
pub(crate) enum Record<T> {
    /// A record that passes its checks and decodes, `len` bytes with its header.
    Valid {
        /// The record.
        batch: T,
        /// Its length with its header.
        len: usize,
    },
    /// Only zeros from here: the end of the records.
    End,
    /// Anything else.
    Bad {
        /// Where the record ends, if its length passes its check.
        end: Option<usize>,
        /// Why it does not decode, if it passes its checksum.
        undecodable: Option<prost::DecodeError>,
    },
}

/// Reads the record at the start of `bytes` (the rest of a file).
pub(crate) fn record<T>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, prost::DecodeError>,
) -> Record<T> {
    let header = bytes.get(..HEADER_BYTES);
    if header.unwrap_or(bytes).iter().all(|byte| *byte == 0) && nonzero_extent(bytes) == 0 {
        return Record::End;
    }
    let Some(length) = checked_length(bytes) else {
        return Record::Bad {
            end: None,
            undecodable: None,
        };
    };
    let end = HEADER_BYTES.saturating_add(length);
    let bad = Record::Bad {
        end: Some(end),
        undecodable: None,
    };
    let (Some(crc), Some(payload)) = (bytes.get(8..HEADER_BYTES), bytes.get(HEADER_BYTES..end))
    else {
        return bad;
    };
    if crc != checksum(length as u32, payload).to_le_bytes() {
        return bad;
    }
    match decode(payload) {
        Ok(batch) => Record::Valid { batch, len: end },
        Err(error) => Record::Bad {
            end: Some(end),
            undecodable: Some(error),
        },
    }
}

/// The length of the record at the start of `bytes`, if it is not zero and passes its
/// check (then it says where the record ends, whatever its payload holds).
fn checked_length(bytes: &[u8]) -> Option<usize> {
    let length = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    let check = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    (length != 0 && check == length_check(length)).then_some(length as usize)
}

/// Where the first valid record at or after `from` starts, if any: evidence that a bad
/// record before it is not the torn last append.
fn next_valid_record<T>(
    bytes: &[u8],
    from: usize,
    decode: impl Fn(&[u8]) -> Result<T, prost::DecodeError>,
) -> Option<usize> {
    let mut start = from;
    while start < bytes.len() {
        // A record's length is not zero, so one of its first four bytes is not either:
        // only offsets up to three before a non-zero byte can start one.
        let nonzero = start + bytes[start..].iter().position(|byte| *byte != 0)?;
        for candidate in nonzero.saturating_sub(3).max(start)..=nonzero {
            if matches!(record(&bytes[candidate..], &decode), Record::Valid { .. }) {
                return Some(candidate);
            }
        }
        start = nonzero + 1;
    }
    None
}

/// How many bytes of `bytes` lie before its trailing zeros.
pub(crate) fn nonzero_extent(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1)
}

/// The check of a record's length field: its CRC-32.
pub(crate) fn length_check(length: u32) -> u32 {
    crc32fast::hash(&length.to_le_bytes())
}

/// A record's checksum: the CRC-32 of its length field and its payload.
pub(crate) fn checksum(length: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&length.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}
