//! The security state every replica must agree on: spent and revoked tokens, and the guessing
//! budgets. `memory` keeps it in the process (one replica, or a weaker guarantee with several);
//! `redis` keeps it in Redis (or Valkey), shared by every replica.
//!
//! | state | memory | redis | redis unreachable |
//! |---|---|---|---|
//! | refresh token spent (rotation) | this replica | every replica, atomic | refused, 503 |
//! | revocation (RFC 7009) | this replica | every replica | refused, 503 |
//! | introspection of revocable tokens | this replica | every replica | refused, 503 |
//! | guessing budgets | this replica | every replica | this replica's (`--state-fallback local`) or 503 (`closed`) |
//!
//! Keys carry ids and hashes only (a token's random `jti`, a truncated SHA-256 of a client_id or
//! username with its source), never token or secret material, and every key expires with what it
//! guards. One request costs one round trip: each step is a single script or command.

pub mod limits;
mod redis;

use crate::lockout::{Lockout, LockoutConfig, Principal};
use crate::revocation::{Mark, Revocations};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use self::limits::{Limited, Over, Remaining};
pub use self::redis::RedisConfig;
pub use crate::lockout::Refused;
use tessera_crds::model::Limits;

/// Why an authentication is refused before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The guessing budgets: this (client, source) or the client must wait.
    Guessing(Refused),
    /// The client is over its token-request limits.
    Limited(Limited),
}

/// The shared state could not be reached in time, or answered with an error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer (down, slow, or recently failed and not retried yet).
    #[error(
        "the shared state (Redis) is unavailable, so this cannot be checked safely; retry shortly"
    )]
    Unavailable,
    /// The in-process revocation store is full of live entries.
    #[error("the revocation store is full; retry later")]
    Full,
}

impl From<StoreError> for crate::error::OAuthError {
    fn from(e: StoreError) -> Self {
        crate::error::OAuthError::Unavailable(e.to_string())
    }
}

/// What happened to a refresh token being exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Not used before (now spent, with rotation).
    Fresh,
    /// Used before: someone holds a copy. Its chain is now revoked everywhere.
    Reused,
    /// The token or its chain was revoked.
    Revoked,
}

/// What the state says about a token, for introspection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenState {
    /// The token was revoked.
    pub revoked: bool,
    /// Its refresh chain was revoked (for refresh tokens).
    pub chain_revoked: bool,
    /// It was spent (a rotated refresh token).
    pub spent: bool,
}

/// How an authentication attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The secret or password was right.
    Succeeded,
    /// Nothing was checked (a proxy key's `-`): neither a failure nor a success.
    Void,
    /// Wrong.
    Failed,
}

/// What the guessing budgets do while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fallback {
    /// Count in this replica (the guarantee of `memory` mode) and keep authenticating.
    Local,
    /// Refuse authentication with 503 until Redis answers again.
    Closed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

/// The store's metrics, registered by [`crate::metrics::Metrics::register_store`].
#[derive(Debug, Default, Clone)]
pub struct StoreMetrics {
    /// 1 while the shared state answers (always 1 in memory mode).
    pub up: Gauge,
    errors: Family<OpLabels, Counter>,
    /// Authentication attempts counted in this replica because Redis did not answer.
    pub fallbacks: Counter,
    /// Requests sent to Redis (each a single round trip).
    pub round_trips: Counter,
}

impl StoreMetrics {
    /// Registers them under `tessera_state_*`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "state_up",
            "1 while the shared security state answers (always 1 with --state memory)",
            self.up.clone(),
        );
        registry.register(
            "state_errors",
            "Requests to the shared state that failed or timed out, by operation",
            self.errors.clone(),
        );
        registry.register(
            "state_fallbacks",
            "Authentication attempts counted in this replica only, because the shared state did not answer",
            self.fallbacks.clone(),
        );
        registry.register(
            "state_round_trips",
            "Requests sent to the shared state",
            self.round_trips.clone(),
        );
    }

    /// Counts a failed operation `op` against the shared state.
    pub fn error(&self, op: &'static str) {
        self.errors.get_or_create(&OpLabels { op }).inc();
    }
}

/// What `/readyz` says about the state.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreHealth {
    /// `memory` or `redis`.
    pub mode: &'static str,
    /// The shared state answered the last request (always true in memory mode).
    pub up: bool,
    /// The last error, if it has not answered since.
    pub last_error: Option<String>,
}

/// The security state (see the module documentation).
#[derive(Debug)]
pub struct Store {
    lockout: Lockout,
    /// The in-process limit state, by client_id (authenticated clients only, so it holds at
    /// most the clients the snapshot has; entries of clients gone are dropped when it grows).
    limits: std::sync::Mutex<std::collections::HashMap<String, limits::State>>,
    revocations: Revocations,
    shared: Option<redis::Shared>,
    fallback: Fallback,
    /// Metrics.
    pub metrics: StoreMetrics,
}

/// A password attempt counted before the hash runs; settle it with [`Store::finish`].
#[must_use = "an attempt is a failure unless it is finished as a success"]
#[derive(Debug)]
pub struct Ticket<'a> {
    inner: TicketInner<'a>,
}

#[derive(Debug)]
enum TicketInner<'a> {
    Local(crate::lockout::Attempt<'a>),
    Shared(redis::Charged),
}

impl Store {
    /// The in-process state.
    pub fn memory(cfg: LockoutConfig) -> Self {
        let metrics = StoreMetrics::default();
        metrics.up.set(1);
        Self {
            lockout: Lockout::new(cfg),
            limits: Default::default(),
            revocations: Revocations::default(),
            shared: None,
            fallback: Fallback::Local,
            metrics,
        }
    }

    /// Shared state in Redis; it connects lazily and reconnects by itself, so a Redis that is
    /// down at start is not an error (requests that need it get 503 until it answers).
    pub fn redis(
        cfg: LockoutConfig,
        redis: RedisConfig,
        fallback: Fallback,
    ) -> Result<Self, anyhow::Error> {
        let metrics = StoreMetrics::default();
        let shared = redis::Shared::new(redis, cfg, metrics.clone())?;
        Ok(Self {
            lockout: Lockout::new(cfg),
            limits: Default::default(),
            revocations: Revocations::default(),
            shared: Some(shared),
            fallback,
            metrics,
        })
    }

    /// `memory` or `redis`.
    pub fn mode(&self) -> &'static str {
        if self.shared.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// For `/readyz`.
    pub fn health(&self) -> StoreHealth {
        match &self.shared {
            None => StoreHealth {
                mode: "memory",
                up: true,
                last_error: None,
            },
            Some(s) => {
                let (up, last_error) = s.health();
                StoreHealth {
                    mode: "redis",
                    up,
                    last_error,
                }
            }
        }
    }

    fn fell_back(&self, op: &'static str) -> Result<(), StoreError> {
        self.metrics.error(op);
        match self.fallback {
            Fallback::Local => {
                self.metrics.fallbacks.inc();
                Ok(())
            }
            Fallback::Closed => Err(StoreError::Unavailable),
        }
    }

    /// Counts one client authentication whose result is already known, or refuses it: checked
    /// and recorded in one step, so concurrent attempts cannot all pass before any is counted.
    /// A refusal is answered 429 whatever the secret was, so it tells a guesser nothing. With
    /// `limits` (a token request of that client_id), a success also spends one request of the
    /// client's rate and quota in the same step.
    pub async fn client_attempt(
        &self,
        principal: Principal<'_>,
        source: Option<IpAddr>,
        outcome: Outcome,
        limits: Option<(&str, &Limits)>,
    ) -> Result<Result<Remaining, Refusal>, StoreError> {
        if let Some(s) = &self.shared {
            match s.attempt(principal, source, outcome, limits).await {
                Ok(r) => return Ok(r),
                Err(_) => self.fell_back("attempt")?,
            }
        }
        let now = Instant::now();
        let attempt = match self.lockout.begin(principal, source, now) {
            Ok(a) => a,
            Err(r) => return Ok(Err(Refusal::Guessing(r))),
        };
        match outcome {
            Outcome::Succeeded => attempt.succeed(now),
            Outcome::Void => attempt.void(now),
            Outcome::Failed => attempt.fail(),
        }
        let Some((id, l)) = limits.filter(|_| outcome == Outcome::Succeeded) else {
            return Ok(Ok(Remaining::default()));
        };
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let mut table = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= MAX_LIMITED_CLIENTS && !table.contains_key(id) {
            // Only clients that authenticated get here; past this many, drop the idle ones.
            let day = now_ms.div_euclid(86_400_000);
            table.retain(|_, st| st.tat_ms > now_ms as f64 || st.day == day);
        }
        let st = table.entry(id.to_owned()).or_default();
        Ok(limits::admit(st, l, now_ms).map_err(Refusal::Limited))
    }

    /// Counts a password attempt before its (slow, memory-hungry) check runs.
    pub async fn begin(
        &self,
        principal: Principal<'_>,
        source: Option<IpAddr>,
    ) -> Result<Result<Ticket<'_>, Refused>, StoreError> {
        if let Some(s) = &self.shared {
            match s.begin(principal, source).await {
                Ok(r) => {
                    return Ok(r.map(|c| Ticket {
                        inner: TicketInner::Shared(c),
                    }));
                }
                Err(_) => self.fell_back("attempt")?,
            }
        }
        Ok(self
            .lockout
            .begin(principal, source, Instant::now())
            .map(|a| Ticket {
                inner: TicketInner::Local(a),
            }))
    }

    /// Settles a password attempt. A failure needs no work: it stays counted.
    pub async fn finish(&self, ticket: Ticket<'_>, outcome: Outcome) {
        match (ticket.inner, outcome) {
            (TicketInner::Local(a), Outcome::Succeeded) => a.succeed(Instant::now()),
            (TicketInner::Local(a), Outcome::Void) => a.void(Instant::now()),
            (TicketInner::Local(a), Outcome::Failed) => a.fail(),
            (TicketInner::Shared(_), Outcome::Failed) => {}
            (TicketInner::Shared(c), o) => {
                if let Some(s) = &self.shared
                    && s.finish(c, o == Outcome::Succeeded).await.is_err()
                {
                    // Not refunded: the user sees one more failure counted, never fewer.
                    self.metrics.error("finish");
                }
            }
        }
    }

    /// Marks `id` (a client assertion's client and jti) used until `exp`: true the first time,
    /// false for a replay, on every replica.
    pub async fn first_use(&self, id: &str, exp: i64, now: i64) -> Result<bool, StoreError> {
        if let Some(s) = &self.shared {
            return s
                .first_use(id, exp - now)
                .await
                .inspect_err(|_| self.metrics.error("first_use"));
        }
        let key = format!("once:{id}");
        let prev = self
            .revocations
            .mark(&key, Mark::Spent, exp.max(now + 1), now)
            .map_err(|_| StoreError::Full)?;
        Ok(prev.is_none())
    }

    /// Checks a refresh token being exchanged and, with `rotate`, spends it. A reused token
    /// revokes its chain for `chain_ttl`.
    pub async fn spend_refresh(
        &self,
        jti: &str,
        chain: &str,
        exp: i64,
        now: i64,
        rotate: bool,
        chain_ttl: Duration,
    ) -> Result<Spend, StoreError> {
        let chain_until = now + chain_ttl.as_secs() as i64;
        if let Some(s) = &self.shared {
            return s
                .spend(jti, chain, exp - now, rotate, chain_until - now)
                .await
                .inspect_err(|_| self.metrics.error("spend"));
        }
        let r = &self.revocations;
        let chain_key = chain_key(chain);
        if r.get(&chain_key, now) == Some(Mark::Revoked) || r.get(jti, now) == Some(Mark::Revoked) {
            return Ok(Spend::Revoked);
        }
        if !rotate {
            return Ok(Spend::Fresh);
        }
        let full = |_| StoreError::Full;
        if r.mark(jti, Mark::Spent, exp, now).map_err(full)? == Some(Mark::Spent) {
            r.mark(&chain_key, Mark::Revoked, chain_until, now)
                .map_err(full)?;
            return Ok(Spend::Reused);
        }
        Ok(Spend::Fresh)
    }

    /// Revokes a token (its `jti`) until `exp`, and with `chain` its whole refresh chain until
    /// `chain_until`.
    pub async fn revoke(
        &self,
        jti: &str,
        exp: i64,
        chain: Option<(&str, i64)>,
        now: i64,
    ) -> Result<(), StoreError> {
        if let Some(s) = &self.shared {
            return s
                .revoke(jti, exp - now, chain.map(|(c, until)| (c, until - now)))
                .await
                .inspect_err(|_| self.metrics.error("revoke"));
        }
        let full = |_| StoreError::Full;
        if let Some((c, until)) = chain {
            self.revocations
                .mark(&chain_key(c), Mark::Revoked, until, now)
                .map_err(full)?;
        }
        self.revocations
            .mark(jti, Mark::Revoked, exp, now)
            .map_err(full)?;
        Ok(())
    }

    /// What the state holds about a token (and its refresh chain).
    pub async fn token_state(
        &self,
        jti: &str,
        chain: Option<&str>,
        now: i64,
    ) -> Result<TokenState, StoreError> {
        if let Some(s) = &self.shared {
            return s
                .token_state(jti, chain)
                .await
                .inspect_err(|_| self.metrics.error("token_state"));
        }
        let r = &self.revocations;
        let mark = r.get(jti, now);
        Ok(TokenState {
            revoked: mark == Some(Mark::Revoked),
            chain_revoked: chain.is_some_and(|c| r.get(&chain_key(c), now) == Some(Mark::Revoked)),
            spent: mark.is_some(),
        })
    }
}

/// In-process limit entries before idle ones are dropped.
const MAX_LIMITED_CLIENTS: usize = 200_000;

fn chain_key(chain: &str) -> String {
    format!("chain:{chain}")
}
