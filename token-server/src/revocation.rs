//! Revoked and spent token ids, so that RFC 7009 revocation and refresh-token rotation (a refresh
//! token is spent once used; reuse revokes its chain, RFC 6819 §5.2.2.3) hold on this replica.
//!
//! This store is per process. With several replicas, revocation that must reach all of them goes
//! through the Kubernetes API (a per-Credential `status.notBefore`), which the in-cluster source
//! reads; see the README. Entries expire with the token they describe; the store is bounded.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher as _;
use std::sync::Mutex;

/// Most entries held, over all shards.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Independent locks: an insert locks one shard, so replicas' API threads rarely contend.
const SHARDS: usize = 16;
/// Expired entries dropped per insert: expiry keeps pace with inserts without a full sweep.
const EXPIRE_PER_INSERT: usize = 4;

/// What happened to a token id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Explicitly revoked.
    Revoked,
    /// A rotated refresh token that was used once.
    Spent,
}

/// The store is full of marks that have not expired: the caller must refuse the operation it
/// wanted to record (fail closed), since forgetting a mark would un-revoke a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the revocation store is full ({MAX_ENTRIES} unexpired entries); retry later")]
pub struct Full;

#[derive(Debug, Default)]
struct Shard {
    // id -> (mark, unix time after which the entry can be forgotten)
    map: HashMap<Box<str>, (Mark, i64)>,
    // (expiry, id), soonest first. An entry whose expiry changed leaves a stale item here,
    // skipped when popped; the heap is rebuilt if stale items ever outnumber live ones.
    expiry: BinaryHeap<Reverse<(i64, Box<str>)>>,
}

impl Shard {
    fn expire(&mut self, now: i64, most: usize) {
        for _ in 0..most {
            match self.expiry.peek() {
                Some(Reverse((exp, _))) if *exp <= now => {}
                _ => return,
            }
            if let Some(Reverse((exp, id))) = self.expiry.pop()
                && self.map.get(&id).is_some_and(|(_, e)| *e == exp)
            {
                self.map.remove(&id);
            }
        }
    }

    fn rebuild_if_stale(&mut self) {
        if self.expiry.len() > 2 * self.map.len() + 64 {
            self.expiry = self
                .map
                .iter()
                .map(|(id, (_, exp))| Reverse((*exp, id.clone())))
                .collect();
        }
    }
}

/// The store: bounded by construction. Each shard holds at most its share of [`MAX_ENTRIES`];
/// every insert first drops a few expired entries (soonest expiry first, from a heap), so no
/// insert ever sweeps the whole table; when a shard is full of live entries the insert fails.
#[derive(Debug)]
pub struct Revocations {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: std::hash::RandomState,
}

impl Default for Revocations {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

impl Revocations {
    /// A store holding at most `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn shard(&self, id: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(id) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `id` until `expires` (unix seconds). Returns the previous mark, if any; [`Full`] if
    /// the mark could not be recorded.
    pub fn mark(&self, id: &str, mark: Mark, expires: i64, now: i64) -> Result<Option<Mark>, Full> {
        let mut shard = self.shard(id);
        shard.expire(now, EXPIRE_PER_INSERT);
        let current = shard.map.get(id).copied();
        let prev = current.filter(|(_, exp)| *exp > now).map(|(m, _)| m);
        if prev == Some(Mark::Revoked) {
            return Ok(prev);
        }
        if current.is_none() && shard.map.len() >= self.per_shard {
            shard.expire(now, usize::MAX);
            if shard.map.len() >= self.per_shard {
                return Err(Full);
            }
        }
        let id: Box<str> = id.into();
        if current.is_none_or(|(_, exp)| exp != expires) {
            shard.expiry.push(Reverse((expires, id.clone())));
        }
        shard.map.insert(id, (mark, expires));
        shard.rebuild_if_stale();
        Ok(prev)
    }

    /// The mark of `id`, if it has one that has not expired.
    pub fn get(&self, id: &str, now: i64) -> Option<Mark> {
        self.shard(id)
            .map
            .get(id)
            .filter(|(_, exp)| *exp > now)
            .map(|(m, _)| *m)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
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
        assert_eq!(r.mark("a", Mark::Spent, 100, 0), Ok(None));
        assert_eq!(
            r.mark("a", Mark::Spent, 100, 1),
            Ok(Some(Mark::Spent)),
            "second use is detected"
        );
        r.mark("a", Mark::Revoked, 100, 2).expect("room");
        r.mark("a", Mark::Spent, 100, 3).expect("room");
        assert_eq!(r.get("a", 4), Some(Mark::Revoked));
        assert_eq!(r.get("a", 100), None, "expired with the token");
    }

    #[test]
    fn full_of_live_marks_it_refuses_and_never_forgets_one() {
        let cap = SHARDS * 10;
        let r = Revocations::with_capacity(cap);
        // Enough attempts that every shard fills (about 100 each).
        let fill = |prefix: &str, exp: i64, now: i64| {
            let mut stored = Vec::new();
            for i in 0..SHARDS * 100 {
                let id = format!("{prefix}{i}");
                if r.mark(&id, Mark::Revoked, exp, now).is_ok() {
                    stored.push(id);
                }
            }
            stored
        };
        let stored = fill("t", 1_000, 0);
        assert_eq!(
            stored.len(),
            cap,
            "every shard holds its share, the rest is refused"
        );
        assert_eq!(r.len(), cap);
        for id in &stored {
            assert_eq!(r.get(id, 1), Some(Mark::Revoked), "{id} was not forgotten");
        }
        // Once they expire, room comes back.
        assert_eq!(fill("n", 3_000, 2_000).len(), cap);
        assert_eq!(r.len(), cap);
    }

    #[test]
    fn replaying_one_id_does_not_grow_the_store() {
        let r = Revocations::with_capacity(1_000);
        for t in 0..100_000 {
            let _ = r.mark("spent", Mark::Spent, 10_000_000, t);
        }
        let heap: usize = r
            .shards
            .iter()
            .map(|s| s.lock().expect("lock").expiry.len())
            .sum();
        assert_eq!((r.len(), heap), (1, 1));
    }
}
