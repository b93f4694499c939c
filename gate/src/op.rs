//! The values that go through the gate: [`WriteOp`] in, [`Accepted`] and [`Stored`] out.

use fenced_types::FencingToken;

/// One change to one key of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Sets a key to a value.
    Put {
        /// The key within the resource.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes a key.
    Delete {
        /// The key within the resource.
        key: Vec<u8>,
    },
}

impl WriteOp {
    /// A put of `value` at `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        WriteOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A deletion of `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        WriteOp::Delete { key: key.into() }
    }

    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        }
    }
}

/// What an accepted write (or fence) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The resource's mark after the call: the highest token it has accepted or been
    /// fenced with.
    pub mark: FencingToken,
    /// Whether the key held a value before (always false for a fence).
    pub existed: bool,
}

/// A value as stored, with the token of the write that stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The value.
    pub value: Vec<u8>,
    /// The token that wrote it.
    pub token: FencingToken,
}
