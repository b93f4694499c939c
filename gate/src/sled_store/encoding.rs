//! The on-disk layout, in two sled trees:
//! - `marks`: resource name -> the mark, 8 bytes big-endian.
//! - `data`: `[resource length: u16 BE][resource][key]` -> `[writer's token: 8 bytes BE][value]`.
//!
//! The length prefix keeps resources apart: without it, resource `ab` + key `c` and
//! resource `a` + key `bc` would share a storage key.

use fenced_types::{FencingToken, LockName};

use crate::error::StorageError;
use crate::op::Stored;

/// The storage key of one key of one resource.
pub(super) fn data_key(resource: &LockName, key: &[u8]) -> Vec<u8> {
    let name = resource.as_bytes();
    // Resource names are at most 256 bytes (LockName's rule), so the length fits a u16.
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + name.len() + key.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(key);
    out
}

/// A stored value: the writer's token, then the value.
pub(super) fn encode_value(token: FencingToken, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&token.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Reads a stored value back; a short or zero-token record is corruption, reported, never
/// a panic.
pub(super) fn decode_value(bytes: &[u8]) -> Result<Stored, StorageError> {
    let (token, value) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| StorageError::new("decoding a value", "record shorter than 8 bytes"))?;
    let token = FencingToken::from_be_bytes(*token)
        .map_err(|e| StorageError::new("decoding a value", e))?;
    Ok(Stored {
        value: value.to_vec(),
        token,
    })
}

/// Reads a mark back.
pub(super) fn decode_mark(bytes: &[u8]) -> Result<FencingToken, StorageError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| {
        StorageError::new(
            "decoding a mark",
            format!("mark is {} bytes, not 8", bytes.len()),
        )
    })?;
    FencingToken::from_be_bytes(array).map_err(|e| StorageError::new("decoding a mark", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_do_not_alias() {
        let ab = LockName::new("ab").unwrap();
        let a = LockName::new("a").unwrap();
        assert_ne!(data_key(&ab, b"c"), data_key(&a, b"bc"));
    }

    #[test]
    fn values_and_marks_round_trip_and_corruption_is_an_error() {
        let t = FencingToken::new(42).unwrap();
        let stored = decode_value(&encode_value(t, b"hello")).unwrap();
        assert_eq!(stored.token, t);
        assert_eq!(stored.value, b"hello");
        assert!(decode_value(b"short").is_err());
        assert!(decode_value(&[0u8; 8]).is_err());
        assert_eq!(decode_mark(&t.to_be_bytes()).unwrap(), t);
        assert!(decode_mark(b"123").is_err());
    }
}
