//! Guessing protection (RFC 6749 §2.3.1, §4.3.2) that an attacker cannot turn into a lockout.
//!
//! A *principal* is a client_id, or a user of a client (password grant). A *source* is the
//! caller's address (see `crate::http::source`: the peer, or the client named by a trusted
//! proxy), IPv6 folded to its /64.
//!
//! - **Per (principal, source)**: the first `free_failures` failures cost nothing; after that each
//!   attempt must wait `base_delay · 2^(n − free)` (capped at `max_delay`) since the previous one,
//!   or it is answered 429 without checking anything. The guesser slows itself down; nobody else
//!   is affected.
//! - **Known good**: a (principal, source) that authenticated successfully in the last
//!   `known_good_ttl` is never subject to the budgets below, only to its own delay: a client whose
//!   secret is being guessed from elsewhere keeps working.
//! - **Per principal, per source** (backstops for attacks from many sources, or one source
//!   spraying many principals): token buckets of `principal_budget` and `source_budget` failures
//!   per `window`. When one is empty, attempts from pairs that are not known good get 429.
//!
//! An attempt is counted when it *begins* (before the secret or password is checked), so
//! concurrent attempts cannot all pass the check; a success refunds it, and an attempt that never
//! finishes (its request cancelled) stays counted.
//!
//! Memory: keys are 128-bit keyed hashes (an attacker's 200 KB client_id costs 16 bytes), every
//! table holds at most `max_entries`, expired entries are dropped a few at a time on every insert
//! (oldest first), and when a table is full of live entries the oldest is evicted: counting never
//! stops.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits.
#[derive(Debug, Clone, Copy)]
pub struct LockoutConfig {
    /// Failures per (principal, source) before delays start.
    pub free_failures: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Failures per principal per `window` from pairs that are not known good.
    pub principal_budget: u32,
    /// Failures per source per `window` from pairs that are not known good.
    pub source_budget: u32,
    /// How fast the budgets refill (all of it per window).
    pub window: Duration,
    /// How long a success makes a (principal, source) pair known good.
    pub known_good_ttl: Duration,
    /// Most entries per table.
    pub max_entries: usize,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            principal_budget: 20,
            source_budget: 100,
            window: Duration::from_secs(300),
            known_good_ttl: Duration::from_secs(24 * 3600),
            max_entries: 100_000,
        }
    }
}

/// Who is being authenticated.
#[derive(Debug, Clone, Copy)]
pub enum Principal<'a> {
    /// A client, by client_id.
    Client(&'a str),
    /// A user of a client's user pool.
    User {
        /// The client.
        client_id: &'a str,
        /// The username.
        username: &'a str,
    },
}

type Key = u128;

/// Two independently keyed SipHashes: collisions cannot be aimed without the process's keys.
struct Keyer(std::hash::RandomState, std::hash::RandomState);

impl Keyer {
    fn key(&self, parts: &[&[u8]]) -> Key {
        let one = |s: &std::hash::RandomState| {
            let mut h = s.build_hasher();
            for p in parts {
                h.write_usize(p.len());
                h.write(p);
            }
            h.finish()
        };
        (u128::from(one(&self.0)) << 64) | u128::from(one(&self.1))
    }
}

impl std::fmt::Debug for Keyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyer")
    }
}

/// A table with continuous, oldest-first expiry and a hard size bound.
#[derive(Debug)]
struct Table<V> {
    map: HashMap<Key, (V, Instant)>,
    // (key, touched): oldest first; items whose key was touched again since are stale.
    order: VecDeque<(Key, Instant)>,
    max: usize,
    ttl: Duration,
}

impl<V> Table<V> {
    fn new(max: usize, ttl: Duration) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
            ttl,
        }
    }

    fn get(&self, k: &Key, now: Instant) -> Option<&V> {
        self.map
            .get(k)
            .filter(|(_, t)| now.saturating_duration_since(*t) < self.ttl)
            .map(|(v, _)| v)
    }

    /// Drops up to `most` expired (or, with `force`, the oldest live) entries.
    fn sweep(&mut self, now: Instant, most: usize, force: bool) {
        let mut dropped = 0;
        while dropped < most {
            let Some(&(k, touched)) = self.order.front() else {
                return;
            };
            let live = self.map.get(&k).is_some_and(|(_, t)| *t == touched);
            if live && now.saturating_duration_since(touched) < self.ttl && !force {
                return;
            }
            self.order.pop_front();
            if live {
                self.map.remove(&k);
                dropped += 1;
            }
        }
    }

    /// Sets `k` (touching it), making room first.
    fn put(&mut self, k: Key, v: V, now: Instant) {
        self.sweep(now, 2, false);
        if !self.map.contains_key(&k) && self.map.len() >= self.max {
            self.sweep(now, 1, true);
        }
        self.map.insert(k, (v, now));
        self.order.push_back((k, now));
        // Stale order items are bounded by the live ones.
        if self.order.len() > 2 * self.map.len() + 64 {
            let mut live: Vec<(Key, Instant)> =
                self.map.iter().map(|(k, (_, t))| (*k, *t)).collect();
            live.sort_by_key(|(_, t)| *t);
            self.order = live.into();
        }
    }

    /// When `k` was last set, if it is held.
    fn touched(&self, k: &Key) -> Option<Instant> {
        self.map.get(k).map(|(_, t)| *t)
    }

    fn remove(&mut self, k: &Key) {
        self.map.remove(k);
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct Pair {
    failures: u32,
    last: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn level(self, now: Instant, cap: u32, window: Duration) -> f64 {
        let rate = f64::from(cap) / window.as_secs_f64().max(0.001);
        (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate)
            .min(f64::from(cap))
    }
}

#[derive(Debug)]
struct Tables {
    pairs: Table<Pair>,
    principals: Table<Bucket>,
    sources: Table<Bucket>,
    good: Table<()>,
}

/// The budgets.
#[derive(Debug)]
pub struct Lockout {
    cfg: LockoutConfig,
    keyer: Keyer,
    tables: Mutex<Tables>,
}

/// Why an attempt may not be made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Seconds to wait, at least 1.
    pub retry_after: u64,
}

/// An attempt in progress, already counted as a failure. [`Attempt::succeed`] refunds it;
/// dropping it (a wrong secret, a cancelled request) leaves it counted.
#[must_use = "an attempt is a failure unless it succeeds"]
#[derive(Debug)]
pub struct Attempt<'a> {
    lockout: &'a Lockout,
    pair: Key,
    principal: Key,
    source: Option<Key>,
    charged: bool,
}

/// The bytes a source is counted by, and how many of them: IPv4 whole, IPv6 by its /64 (one
/// holder of a /64 has 2^64 addresses). No allocation: this runs on every authentication.
pub(crate) fn source_bytes(addr: IpAddr) -> ([u8; 8], usize) {
    let mut b = [0u8; 8];
    let v4 = |b: &mut [u8; 8], a: std::net::Ipv4Addr| {
        b[..4].copy_from_slice(&a.octets());
        4
    };
    let n = match addr {
        IpAddr::V4(a) => v4(&mut b, a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => v4(&mut b, a),
            None => {
                b.copy_from_slice(&a.octets()[..8]);
                8
            }
        },
    };
    (b, n)
}

impl Lockout {
    /// New, empty tables.
    pub fn new(cfg: LockoutConfig) -> Self {
        let forget = cfg.max_delay.max(cfg.window) * 2;
        Self {
            tables: Mutex::new(Tables {
                pairs: Table::new(cfg.max_entries, forget),
                principals: Table::new(cfg.max_entries, cfg.window),
                sources: Table::new(cfg.max_entries, cfg.window),
                good: Table::new(cfg.max_entries, cfg.known_good_ttl),
            }),
            keyer: Keyer(std::hash::RandomState::new(), std::hash::RandomState::new()),
            cfg,
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn delay(&self, failures: u32) -> Duration {
        let over = failures.saturating_sub(self.cfg.free_failures);
        if over == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (over - 1).min(20);
        self.cfg
            .base_delay
            .saturating_mul(factor)
            .min(self.cfg.max_delay)
    }

    /// Starts an attempt of `principal` from `source`, or says how long to wait.
    pub fn begin(
        &self,
        principal: Principal<'_>,
        source: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt<'_>, Refused> {
        let p = match principal {
            Principal::Client(id) => self.keyer.key(&[b"client", id.as_bytes()]),
            Principal::User {
                client_id,
                username,
            } => self
                .keyer
                .key(&[b"user", client_id.as_bytes(), username.as_bytes()]),
        };
        let src = source.map(source_bytes);
        let src = src.as_ref().map(|(b, n)| &b[..*n]);
        let s = src.map(|b| self.keyer.key(&[b"source", b]));
        let pair = self
            .keyer
            .key(&[b"pair", &p.to_le_bytes(), src.unwrap_or(b"none")]);
        let secs = |d: Duration| Refused {
            retry_after: d.as_secs_f64().ceil().max(1.0) as u64,
        };
        let mut t = self.tables();
        let prev = t.pairs.get(&pair, now).copied();
        if let Some(pr) = prev {
            // Callers read the clock before taking the lock, so `now` may be a hair before
            // `last`: only a real delay makes anyone wait.
            let delay = self.delay(pr.failures);
            let wait = (pr.last + delay).saturating_duration_since(now);
            if !delay.is_zero() && !wait.is_zero() {
                return Err(secs(wait));
            }
        }
        let known_good = t.good.get(&pair, now).is_some();
        let cfg = self.cfg;
        let level = |table: &Table<Bucket>, k: &Key, cap: u32| {
            table
                .get(k, now)
                .map_or(f64::from(cap), |b| b.level(now, cap, cfg.window))
        };
        if !known_good {
            let pl = level(&t.principals, &p, cfg.principal_budget);
            let sl = s.map_or(f64::from(cfg.source_budget), |s| {
                level(&t.sources, &s, cfg.source_budget)
            });
            let refill = |cap: u32, lvl: f64| {
                Duration::from_secs_f64(
                    (1.0 - lvl) * cfg.window.as_secs_f64() / f64::from(cap.max(1)),
                )
            };
            if pl < 1.0 {
                return Err(secs(refill(cfg.principal_budget, pl)));
            }
            if sl < 1.0 {
                return Err(secs(refill(cfg.source_budget, sl)));
            }
            t.principals.put(
                p,
                Bucket {
                    tokens: pl - 1.0,
                    at: now,
                },
                now,
            );
            if let Some(s) = s {
                t.sources.put(
                    s,
                    Bucket {
                        tokens: sl - 1.0,
                        at: now,
                    },
                    now,
                );
            }
        }
        let failures = prev.map_or(0, |pr| pr.failures).saturating_add(1);
        t.pairs.put(
            pair,
            Pair {
                failures,
                last: now,
            },
            now,
        );
        Ok(Attempt {
            lockout: self,
            pair,
            principal: p,
            source: s,
            charged: !known_good,
        })
    }

    /// Entries tracked (for metrics).
    pub fn tracked(&self) -> usize {
        let t = self.tables();
        t.pairs.len() + t.principals.len() + t.sources.len() + t.good.len()
    }

    fn refund(&self, a: &Attempt<'_>, now: Instant, good: bool) {
        let cfg = self.cfg;
        let mut t = self.tables();
        if good {
            t.pairs.remove(&a.pair);
            // Refreshed at most once a minute: a busy client's every success would otherwise
            // queue an expiry item.
            if t.good
                .touched(&a.pair)
                .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(60))
            {
                t.good.put(a.pair, (), now);
            }
        } else if let Some(pr) = t.pairs.get(&a.pair, now).copied() {
            let pr = Pair {
                failures: pr.failures.saturating_sub(1),
                ..pr
            };
            t.pairs.put(a.pair, pr, now);
        }
        if a.charged {
            let give_back = |table: &mut Table<Bucket>, k: Key, cap: u32| {
                if let Some(b) = table.get(&k, now).copied() {
                    let tokens = (b.level(now, cap, cfg.window) + 1.0).min(f64::from(cap));
                    table.put(k, Bucket { tokens, at: now }, now);
                }
            };
            give_back(&mut t.principals, a.principal, cfg.principal_budget);
            if let Some(s) = a.source {
                give_back(&mut t.sources, s, cfg.source_budget);
            }
        }
    }
}

impl Attempt<'_> {
    /// The secret or password was right: the attempt is refunded, the pair's failures are
    /// forgotten and it becomes known good.
    pub fn succeed(self, now: Instant) {
        self.lockout.refund(&self, now, true);
    }

    /// Nothing was checked after all (a proxy key's `-`, which proves nothing): refunded, and
    /// the pair does not become known good.
    pub fn void(self, now: Instant) {
        self.lockout.refund(&self, now, false);
    }

    /// The secret or password was wrong: the attempt stays counted (as when it is dropped).
    pub fn fail(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LockoutConfig {
        LockoutConfig {
            free_failures: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            principal_budget: 10,
            source_budget: 20,
            window: Duration::from_secs(100),
            known_good_ttl: Duration::from_secs(3600),
            max_entries: 1000,
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    const A: Principal<'static> = Principal::Client("a");

    #[test]
    fn a_guesser_slows_itself_down_and_nobody_else() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        for _ in 0..3 {
            l.begin(A, ip("10.0.0.1"), t0).expect("free").fail();
        }
        // The fourth failure is allowed at once, then it has to wait 1 s, 2 s, 4 s...
        l.begin(A, ip("10.0.0.1"), t0).expect("fourth").fail();
        assert_eq!(
            l.begin(A, ip("10.0.0.1"), t0).map(|_| ()),
            Err(Refused { retry_after: 1 })
        );
        let t1 = t0 + Duration::from_secs(1);
        l.begin(A, ip("10.0.0.1"), t1).expect("after 1 s").fail();
        assert_eq!(
            l.begin(A, ip("10.0.0.1"), t1 + Duration::from_secs(1))
                .map(|_| ()),
            Err(Refused { retry_after: 1 }),
            "now 2 s"
        );
        // The same client from another source, and another client, are not affected.
        l.begin(A, ip("10.0.0.2"), t1)
            .expect("other source")
            .succeed(t1);
        l.begin(Principal::Client("b"), ip("10.0.0.1"), t1)
            .expect("other client")
            .succeed(t1);
    }

    #[test]
    fn correct_secrets_in_flight_at_once_are_never_slowed() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        // Clocks read before the lock: a later instant may arrive first.
        let late = l
            .begin(A, ip("10.0.0.1"), t0 + Duration::from_millis(5))
            .expect("late");
        let early = l
            .begin(A, ip("10.0.0.1"), t0)
            .expect("an earlier clock reading is fine");
        late.succeed(t0);
        early.succeed(t0);
    }

    #[test]
    fn concurrent_attempts_are_counted_before_they_are_checked() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        // Ten requests in flight at once: only free_failures + 1 get to check anything.
        let held: Vec<_> = (0..10)
            .filter_map(|_| l.begin(A, ip("10.0.0.1"), t0).ok())
            .collect();
        assert_eq!(held.len(), 4);
    }

    #[test]
    fn many_sources_drain_the_principal_budget_but_not_a_known_good_client() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        l.begin(A, ip("192.0.2.1"), t0).expect("legit").succeed(t0);
        for i in 0..10 {
            l.begin(A, ip(&format!("10.1.0.{i}")), t0)
                .expect("budget")
                .fail();
        }
        assert!(
            l.begin(A, ip("10.1.1.1"), t0).is_err(),
            "an eleventh new source waits for the budget"
        );
        l.begin(A, ip("192.0.2.1"), t0)
            .expect("the client's own source is still served")
            .succeed(t0);
        // The budget refills: one failure's worth every window / budget.
        assert!(
            l.begin(A, ip("10.1.1.1"), t0 + Duration::from_secs(10))
                .is_ok()
        );
    }

    #[test]
    fn a_spraying_source_runs_out_of_its_budget_but_known_good_pairs_behind_it_do_not() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let nat = ip("10.2.0.1");
        l.begin(Principal::Client("legit"), nat, t0)
            .expect("legit")
            .succeed(t0);
        for i in 0..20 {
            let id = format!("guess-{i}");
            l.begin(Principal::Client(&id), nat, t0)
                .expect("budget")
                .fail();
        }
        assert!(l.begin(Principal::Client("guess-x"), nat, t0).is_err());
        l.begin(Principal::Client("legit"), nat, t0)
            .expect("a client that authenticated from this address before")
            .succeed(t0);
    }

    #[test]
    fn success_refunds_and_forgets_void_only_refunds() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        for _ in 0..100 {
            l.begin(A, ip("10.0.0.1"), t0)
                .expect("refunded")
                .succeed(t0);
        }
        let u = Principal::User {
            client_id: "proxy",
            username: "alice",
        };
        for _ in 0..100 {
            l.begin(u, ip("10.0.0.9"), t0).expect("void").void(t0);
        }
    }

    #[test]
    fn users_are_separate_principals() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        let user = |u| Principal::User {
            client_id: "proxy-key",
            username: u,
        };
        for _ in 0..4 {
            l.begin(user("alice"), ip("10.0.0.1"), t0)
                .expect("alice")
                .fail();
        }
        assert!(l.begin(user("alice"), ip("10.0.0.1"), t0).is_err());
        l.begin(user("bob"), ip("10.0.0.1"), t0)
            .expect("bob")
            .succeed(t0);
        l.begin(Principal::Client("proxy-key"), ip("10.0.0.1"), t0)
            .expect("the proxy key itself")
            .succeed(t0);
    }

    #[test]
    fn ipv6_sources_fold_to_their_64() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        for i in 0..4 {
            l.begin(A, ip(&format!("2001:db8:1:2::{i:x}")), t0)
                .expect("free")
                .fail();
        }
        assert!(l.begin(A, ip("2001:db8:1:2::ffff"), t0).is_err());
        assert!(l.begin(A, ip("2001:db8:1:3::1"), t0).is_ok());
    }

    #[test]
    fn tables_stay_bounded_and_keep_counting_when_full() {
        let l = Lockout::new(LockoutConfig {
            max_entries: 50,
            source_budget: 1_000_000,
            principal_budget: 1_000_000,
            ..cfg()
        });
        let t0 = Instant::now();
        let long = "x".repeat(200_000);
        for i in 0..5_000 {
            let id = format!("{long}{i}");
            if let Ok(a) = l.begin(Principal::Client(&id), ip("10.0.0.1"), t0) {
                a.fail();
            }
        }
        assert!(l.tracked() <= 4 * 50, "{}", l.tracked());
        // Still counting: a fresh guesser is slowed down as usual.
        for _ in 0..4 {
            l.begin(A, ip("10.9.9.9"), t0).expect("free").fail();
        }
        assert!(l.begin(A, ip("10.9.9.9"), t0).is_err());
    }

    #[test]
    fn entries_expire() {
        let l = Lockout::new(cfg());
        let t0 = Instant::now();
        for i in 0..100 {
            let id = format!("c{i}");
            l.begin(Principal::Client(&id), ip("10.0.0.1"), t0)
                .map(Attempt::fail)
                .ok();
        }
        assert!(l.tracked() > 0);
        // Inserts long after sweep the expired ones as they go.
        let later = t0 + Duration::from_secs(10_000);
        for i in 0..100 {
            let id = format!("d{i}");
            l.begin(Principal::Client(&id), ip("10.0.0.2"), later)
                .expect("fresh")
                .succeed(later);
        }
        let t = l.tables();
        assert!(t.pairs.len() < 100, "old pairs swept: {}", t.pairs.len());
    }
}
