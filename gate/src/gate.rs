//! [`Gate`]: the one object a storage service talks to.

use std::sync::Arc;

use fenced_types::{FencingToken, LockName};

use crate::backend::{Backend, Verdict};
use crate::config::Config;
use crate::error::{ConfigError, Error};
use crate::op::{Accepted, Stored, WriteOp};

/// Guards a [`Backend`]: every write carries a fencing token, and a token below the
/// resource's high-water mark is refused with [`Error::StaleToken`] and has no effect
/// (CONTRACT S5).
///
/// A cheap `Clone` handle (an `Arc` inside), so one gate can be shared by every request
/// handler. Calls block until the write is durable: with a disk backend, call them from a
/// blocking thread (`tokio::task::spawn_blocking`) in async code.
#[derive(Debug)]
pub struct Gate<B> {
    /// The store.
    backend: Arc<B>,
    /// Limits and the admission rule.
    config: Config,
}

impl<B> Clone for Gate<B> {
    fn clone(&self) -> Self {
        Gate {
            backend: Arc::clone(&self.backend),
            config: self.config.clone(),
        }
    }
}

impl<B: Backend> Gate<B> {
    /// A gate with the default config (fenced, 1 KiB keys, 1 MiB values).
    pub fn new(backend: B) -> Self {
        Gate {
            backend: Arc::new(backend),
            config: Config::default(),
        }
    }

    /// A gate with a validated config.
    pub fn with_config(backend: B, config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Gate {
            backend: Arc::new(backend),
            config,
        })
    }

    /// Checks `token` against `resource`'s mark and applies `op`, in one atomic step.
    ///
    /// Accepted if the token is at least the mark (equal: the same holder writing again);
    /// the mark then becomes the token. Refused with [`Error::StaleToken`] otherwise, and
    /// the write has no effect. Bad input is refused before the backend is touched.
    pub fn write(
        &self,
        resource: &LockName,
        token: FencingToken,
        op: &WriteOp,
    ) -> Result<Accepted, Error> {
        self.check_op(op)?;
        self.commit(resource, token, Some(op))
    }

    /// Raises `resource`'s mark to `token` without writing data.
    ///
    /// A new holder calls this before it starts work: from then on, writes still in
    /// flight from older holders are refused, even to keys the new holder never touches.
    /// Returns the mark after the call. Fencing with a token below the mark is refused as
    /// stale, like a write.
    pub fn fence(&self, resource: &LockName, token: FencingToken) -> Result<FencingToken, Error> {
        self.commit(resource, token, None)
            .map(|accepted| accepted.mark)
    }

    /// Reads one key, with the token of the write that stored it.
    pub fn read(&self, resource: &LockName, key: &[u8]) -> Result<Option<Stored>, Error> {
        self.check_key(key)?;
        Ok(self.backend.read(resource, key)?)
    }

    /// The resource's mark: the highest token it has accepted or been fenced with.
    pub fn mark(&self, resource: &LockName) -> Result<Option<FencingToken>, Error> {
        Ok(self.backend.mark(resource)?)
    }

    /// Makes everything committed durable (for shutdown; each commit already is).
    pub fn flush(&self) -> Result<(), Error> {
        Ok(self.backend.flush()?)
    }

    /// The store underneath.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The gate's config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Refuses malformed keys and oversized values before any storage work.
    pub fn check_op(&self, op: &WriteOp) -> Result<(), Error> {
        self.check_key(op.key())?;
        if let WriteOp::Put { value, .. } = op {
            if value.len() > self.config.max_value_bytes {
                return Err(Error::ValueTooLarge {
                    len: value.len(),
                    max: self.config.max_value_bytes,
                });
            }
        }
        Ok(())
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Error> {
        let max = self.config.max_key_bytes;
        if key.is_empty() {
            return Err(Error::EmptyKey { max });
        }
        if key.len() > max {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn commit(
        &self,
        resource: &LockName,
        token: FencingToken,
        op: Option<&WriteOp>,
    ) -> Result<Accepted, Error> {
        match self
            .backend
            .commit(resource, token, op, self.config.admission)?
        {
            Verdict::Accepted(accepted) => Ok(accepted),
            Verdict::Stale { current } => Err(Error::StaleToken {
                resource: resource.clone(),
                presented: token,
                current,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    fn t(v: u64) -> FencingToken {
        FencingToken::new(v).unwrap()
    }

    #[test]
    fn bad_input_is_refused_before_storage_and_changes_nothing() {
        let config = Config {
            max_key_bytes: 4,
            max_value_bytes: 8,
            ..Config::default()
        };
        let gate = Gate::with_config(MemoryBackend::new(), config).unwrap();
        let r = LockName::new("r").unwrap();
        assert_eq!(
            gate.write(&r, t(9), &WriteOp::put("", "v")),
            Err(Error::EmptyKey { max: 4 })
        );
        assert_eq!(
            gate.write(&r, t(9), &WriteOp::put("toolong", "v")),
            Err(Error::KeyTooLong { len: 7, max: 4 })
        );
        assert_eq!(
            gate.write(&r, t(9), &WriteOp::put("k", vec![0u8; 9])),
            Err(Error::ValueTooLarge { len: 9, max: 8 })
        );
        assert_eq!(
            gate.mark(&r).unwrap(),
            None,
            "a refused write raised the mark"
        );
        // The limits are inclusive.
        gate.write(&r, t(1), &WriteOp::put("kkkk", vec![0u8; 8]))
            .unwrap();
    }

    #[test]
    fn an_invalid_config_is_refused() {
        let config = Config {
            max_key_bytes: 0,
            ..Config::default()
        };
        assert!(Gate::with_config(MemoryBackend::new(), config).is_err());
    }
}
