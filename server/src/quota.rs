//! [`PerIdentity`]: how many of something (Watch streams, waiting acquires) each
//! authenticated identity has at once, refused past a limit, so one tenant cannot take
//! every place a server-wide limit leaves.
//!
//! A [`Place`] counts while it lives and gives itself back when dropped. An identity is in
//! the map only while it holds a place, so the map holds no more entries than places are
//! held at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Status;

use crate::convert;

/// The places each identity holds of one kind, and how many it may hold.
#[derive(Debug, Clone)]
pub struct PerIdentity {
    /// Places held, by identity.
    counts: Arc<Mutex<HashMap<Arc<str>, usize>>>,
    /// How many one identity may hold; 0: no limit.
    limit: usize,
    /// What a place is, for the refusal ("concurrent Watch streams").
    what: &'static str,
    /// The setting that sets the limit, for the refusal.
    setting: &'static str,
}

/// One identity's place; given back when dropped.
#[derive(Debug)]
pub struct Place {
    counts: Arc<Mutex<HashMap<Arc<str>, usize>>>,
    identity: Arc<str>,
}

impl PerIdentity {
    /// At most `limit` places of `what` per identity (0: no limit), set by `setting`.
    pub fn new(limit: usize, what: &'static str, setting: &'static str) -> PerIdentity {
        PerIdentity {
            counts: Arc::new(Mutex::new(HashMap::new())),
            limit,
            what,
            setting,
        }
    }

    /// A place for `identity`, or RESOURCE_EXHAUSTED when it holds its limit already.
    /// Without an identity (authentication off) or a limit, nothing is counted.
    pub fn take(&self, identity: Option<&Arc<str>>) -> Result<Option<Place>, Status> {
        let Some(identity) = identity.filter(|_| self.limit > 0) else {
            return Ok(None);
        };
        let mut counts = self
            .counts
            .lock()
            .map_err(|_| Status::internal("the count of places per identity is poisoned"))?;
        let held = counts.entry(identity.clone()).or_insert(0);
        if *held >= self.limit {
            crate::telemetry::telemetry().refused_exhausted();
            return Err(convert::exhausted(format!(
                "{identity} has {held} {what}: the limit per identity is {limit} ({setting})",
                held = *held,
                what = self.what,
                limit = self.limit,
                setting = self.setting,
            )));
        }
        *held += 1;
        Ok(Some(Place {
            counts: self.counts.clone(),
            identity: identity.clone(),
        }))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        // A poisoned map stays as it is: the next `take` reports it.
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        if let Some(held) = counts.get_mut(&self.identity) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    // checks: A2, S6
    #[test]
    fn an_identity_holds_at_most_its_limit_and_gets_places_back() {
        let quota = PerIdentity::new(2, "things", "max_things");
        let alice: Arc<str> = Arc::from("alice");
        let bob: Arc<str> = Arc::from("bob");
        let first = quota.take(Some(&alice)).unwrap();
        let _second = quota.take(Some(&alice)).unwrap();
        let refused = quota.take(Some(&alice)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("alice has 2 things"),
            "{refused:?}"
        );
        assert!(refused.message().contains("max_things"), "{refused:?}");
        assert!(quota.take(Some(&bob)).unwrap().is_some());
        assert!(quota.take(None).unwrap().is_none(), "no identity, no count");
        drop(first);
        assert!(quota.take(Some(&alice)).unwrap().is_some());
        let off = PerIdentity::new(0, "things", "max_things");
        assert!(off.take(Some(&alice)).unwrap().is_none(), "0: no limit");
    }

    // checks: S6
    #[test]
    fn an_identity_leaves_the_map_with_its_last_place() {
        let quota = PerIdentity::new(1, "things", "max_things");
        let place = quota.take(Some(&Arc::from("alice"))).unwrap();
        assert_eq!(quota.counts.lock().unwrap().len(), 1);
        drop(place);
        assert!(quota.counts.lock().unwrap().is_empty());
    }
}
