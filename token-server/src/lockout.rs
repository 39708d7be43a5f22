//! Brute-force protection (RFC 6749 §2.3.1): a budget of failed client authentications per
//! client_id and per source address. Once a budget is spent the key is locked for a while: every
//! attempt is answered 429 with `Retry-After`, a correct secret included, so guessing cannot go on
//! under cover of an occasional success. Keys are independent: hammering one client_id never locks
//! another client, and a noisy address never locks a client_id by itself.
//!
//! Memory is bounded: at most `max_entries` keys per table; when full, expired windows are dropped
//! first, then the table stops tracking new keys until entries expire (it fails open for new keys
//! rather than growing without bound).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits.
#[derive(Debug, Clone, Copy)]
pub struct LockoutConfig {
    /// Failures per client_id within `window` before it locks.
    pub per_client: u32,
    /// Failures per source address within `window` before it locks.
    pub per_address: u32,
    /// Counting window, and lock duration.
    pub window: Duration,
    /// Most keys tracked per table.
    pub max_entries: usize,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            per_client: 10,
            per_address: 100,
            window: Duration::from_secs(60),
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

#[derive(Debug)]
struct Table<K> {
    map: Mutex<HashMap<K, Entry>>,
    limit: u32,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn new(limit: u32) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            limit,
        }
    }

    fn locked<Q>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .and_then(|e| e.locked_until)
            .filter(|t| *t > now)
            .map(|t| t - now)
    }

    fn fail(&self, key: &K, now: Instant, cfg: &LockoutConfig) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(key) && map.len() >= cfg.max_entries {
            map.retain(|_, e| {
                now.duration_since(e.window_start) < cfg.window
                    || e.locked_until.is_some_and(|t| t > now)
            });
            if map.len() >= cfg.max_entries {
                return false;
            }
        }
        let e = map.entry(key.clone()).or_insert(Entry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if now.duration_since(e.window_start) >= cfg.window {
            *e = Entry {
                window_start: now,
                failures: 0,
                locked_until: None,
            };
        }
        e.failures += 1;
        if e.failures >= self.limit {
            e.locked_until = Some(now + cfg.window);
            return true;
        }
        false
    }

    /// Forgets the failures of `key` unless it is locked (a lock in force stays).
    fn succeed<Q>(&self, key: &Q, now: Instant)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(key)
            .is_some_and(|e| e.locked_until.is_none_or(|t| t <= now))
        {
            map.remove(key);
        }
    }

    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The two budgets.
#[derive(Debug)]
pub struct Lockout {
    cfg: LockoutConfig,
    clients: Table<String>,
    addresses: Table<IpAddr>,
}

impl Lockout {
    /// New, empty tables.
    pub fn new(cfg: LockoutConfig) -> Self {
        Self {
            clients: Table::new(cfg.per_client),
            addresses: Table::new(cfg.per_address),
            cfg,
        }
    }

    /// Seconds until the lock on this client or address ends, if either is locked.
    pub fn check(&self, client_id: &str, addr: Option<IpAddr>, now: Instant) -> Option<u64> {
        let c = self.clients.locked::<str>(client_id, now);
        let a = addr.and_then(|a| self.addresses.locked(&a, now));
        c.max(a).map(|d| d.as_secs().max(1))
    }

    /// Records a failed authentication; true if it locked the client or the address.
    pub fn record_failure(&self, client_id: &str, addr: Option<IpAddr>, now: Instant) -> bool {
        let c = self.clients.fail(&client_id.to_owned(), now, &self.cfg);
        let a = addr.is_some_and(|a| self.addresses.fail(&a, now, &self.cfg));
        c || a
    }

    /// Records a successful authentication: the client's earlier failures are forgotten, so a
    /// client that mistypes now and then never drifts into a lock. The address budget is kept: it
    /// counts guesses against any client.
    pub fn record_success(&self, client_id: &str, now: Instant) {
        self.clients.succeed::<str>(client_id, now);
    }

    /// Keys tracked (for metrics).
    pub fn tracked(&self) -> usize {
        self.clients.len() + self.addresses.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LockoutConfig {
        LockoutConfig {
            per_client: 3,
            per_address: 5,
            window: Duration::from_secs(60),
            max_entries: 4,
        }
    }

    #[test]
    fn locks_after_the_budget_and_unlocks_after_the_window() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        assert!(!l.record_failure("a", Some(ip), t0));
        assert!(!l.record_failure("a", Some(ip), t0));
        assert_eq!(l.check("a", Some(ip), t0), None);
        assert!(l.record_failure("a", Some(ip), t0));
        assert_eq!(l.check("a", None, t0), Some(60));
        assert_eq!(l.check("b", None, t0), None, "another client is not locked");
        assert_eq!(l.check("a", None, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn the_address_budget_is_separate() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.2".parse().expect("ip");
        for i in 0..5 {
            l.record_failure(&format!("guess-{i}"), Some(ip), t0);
        }
        assert!(
            l.check("anyone", Some(ip), t0).is_some(),
            "the address is locked"
        );
        assert_eq!(
            l.check("anyone", Some("10.0.0.3".parse().expect("ip")), t0),
            None
        );
        assert_eq!(
            l.check("anyone", None, t0),
            None,
            "client ids are not locked by the address"
        );
    }

    #[test]
    fn a_success_forgets_failures_but_not_a_lock() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        l.record_failure("a", None, t0);
        l.record_failure("a", None, t0);
        l.record_success("a", t0);
        assert!(!l.record_failure("a", None, t0), "counting starts again");
        assert!(!l.record_failure("a", None, t0));
        assert!(
            l.record_failure("a", None, t0),
            "third failure since the success locks"
        );
        l.record_success("a", t0);
        assert!(l.check("a", None, t0).is_some(), "a lock in force stays");
    }

    #[test]
    fn memory_is_bounded() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        for i in 0..100 {
            l.record_failure(&format!("c{i}"), None, t0);
        }
        assert!(l.tracked() <= 4);
    }
}
