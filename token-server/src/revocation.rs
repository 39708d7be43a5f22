//! Revoked and spent token ids, so that RFC 7009 revocation and refresh-token rotation (a refresh
//! token is spent once used; reuse revokes its chain, RFC 6819 §5.2.2.3) hold on this replica.
//!
//! This store is per process. With several replicas, revocation that must reach all of them goes
//! through the Kubernetes API (a per-Credential `status.notBefore`), which the in-cluster source
//! reads; see the README. Entries expire with the token they describe; the store is bounded.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most entries held.
pub const MAX_ENTRIES: usize = 1_000_000;

/// What happened to a token id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Explicitly revoked.
    Revoked,
    /// A rotated refresh token that was used once.
    Spent,
}

/// The store.
#[derive(Debug, Default)]
pub struct Revocations {
    // id -> (mark, unix time after which the entry can be forgotten)
    map: Mutex<HashMap<String, (Mark, i64)>>,
}

impl Revocations {
    /// Marks `id` until `expires` (unix seconds). Returns the previous mark, if any.
    pub fn mark(&self, id: &str, mark: Mark, expires: i64, now: i64) -> Option<Mark> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, exp)| *exp > now);
        }
        let prev = map.get(id).filter(|(_, exp)| *exp > now).map(|(m, _)| *m);
        if prev != Some(Mark::Revoked) {
            map.insert(id.to_owned(), (mark, expires));
        }
        prev
    }

    /// The mark of `id`, if it has one that has not expired.
    pub fn get(&self, id: &str, now: i64) -> Option<Mark> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).filter(|(_, exp)| *exp > now).map(|(m, _)| *m)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_expire_and_revoked_wins_over_spent() {
        let r = Revocations::default();
        assert_eq!(r.mark("a", Mark::Spent, 100, 0), None);
        assert_eq!(
            r.mark("a", Mark::Spent, 100, 1),
            Some(Mark::Spent),
            "second use is detected"
        );
        r.mark("a", Mark::Revoked, 100, 2);
        r.mark("a", Mark::Spent, 100, 3);
        assert_eq!(r.get("a", 4), Some(Mark::Revoked));
        assert_eq!(r.get("a", 100), None, "expired with the token");
    }
}
