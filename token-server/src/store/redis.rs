//! The shared state in Redis: one script or command per step, bounded by a timeout, and a short
//! pause after a failure so a dead Redis costs each request nothing more than a refusal.

use super::limits::{Limited, Over, Remaining};
use super::{Outcome, Refusal, Spend, StoreError, StoreMetrics, TokenState};
use crate::lockout::{LockoutConfig, Principal, Refused};
use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo as _, Script};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tessera_crds::model::Limits;

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://` (TLS). A password in it is used, but should come
    /// from `password` instead (a file or the environment, never the command line).
    pub url: String,
    /// The AUTH password.
    pub password: Option<String>,
    /// PEM CA bundle for `rediss://` (else the system roots).
    pub ca_pem: Option<Vec<u8>>,
    /// The longest a request waits for Redis.
    pub timeout: Duration,
    /// Prefix of every key (several deployments can share one Redis).
    pub prefix: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password, nor a URL that may carry one.
        f.debug_struct("RedisConfig")
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Each thread's connections, by store.
    static CONNECTIONS: std::cell::RefCell<Vec<(u64, ConnectionManager)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// After a failure, requests skip Redis this long (then the next one tries again).
const PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(500);

pub(super) struct Shared {
    client: redis::Client,
    manager: ConnectionManagerConfig,
    /// Tells this store's connections apart in each thread's [`CONNECTIONS`].
    id: u64,
    cfg: LockoutConfig,
    timeout: Duration,
    prefix: String,
    attempt: Script,
    finish: Script,
    spend: Script,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried.
    paused_until: AtomicU64,
    up: AtomicBool,
    last_error: Mutex<Option<String>>,
    metrics: StoreMetrics,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A password attempt counted in Redis, to settle with [`Shared::finish`].
#[derive(Debug)]
pub(super) struct Charged {
    keys: Keys,
    charged: bool,
}

#[derive(Debug)]
struct Keys {
    pair: String,
    principal: String,
    source: String,
    good: String,
    has_source: bool,
}

/// A truncated SHA-256 of length-prefixed parts, hex: stable across replicas, and no client_id,
/// username or address appears in Redis.
fn digest(parts: &[&[u8]]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p);
    }
    let d = ctx.finish();
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Shared {
    pub(super) fn new(
        rc: RedisConfig,
        cfg: LockoutConfig,
        metrics: StoreMetrics,
    ) -> anyhow::Result<Self> {
        let mut info = rc
            .url
            .as_str()
            .into_connection_info()
            .context("--state: not a redis:// or rediss:// URL")?;
        if let Some(p) = &rc.password {
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        let client = match &rc.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
        .context("--state: the Redis connection settings are not usable")?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(rc.timeout))
            .set_response_timeout(Some(rc.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        // Fails now, not on the first request, if the settings cannot work.
        ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())
            .context("--state: could not set up the Redis connection")?;
        metrics.up.set(0);
        static IDS: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            client,
            manager,
            id: IDS.fetch_add(1, Ordering::Relaxed),
            cfg,
            timeout: rc.timeout,
            prefix: rc.prefix,
            attempt: Script::new(include_str!("attempt.lua")),
            finish: Script::new(include_str!("finish.lua")),
            spend: Script::new(include_str!("spend.lua")),
            started: Instant::now(),
            paused_until: AtomicU64::new(0),
            up: AtomicBool::new(false),
            last_error: Mutex::new(Some("not connected yet".into())),
            metrics,
        })
    }

    pub(super) fn health(&self) -> (bool, Option<String>) {
        let e = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.up.load(Ordering::Relaxed), e)
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs one request with the timeout, pausing Redis use after a failure.
    async fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.elapsed_ms() < self.paused_until.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable);
        }
        self.metrics.round_trips.inc();
        let mut conn = self.connection()?;
        let failed = match tokio::time::timeout(self.timeout, f(&mut conn)).await {
            Ok(Ok(v)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("the shared state (Redis) answers");
                    self.metrics.up.set(1);
                    *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                return Ok(v);
            }
            // Redis errors name the command and the server's reply, never the password.
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.paused_until.store(
            self.elapsed_ms() + PAUSE_AFTER_FAILURE.as_millis() as u64,
            Ordering::Relaxed,
        );
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %failed, "the shared state (Redis) does not answer");
        }
        self.metrics.up.set(0);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(failed);
        Err(StoreError::Unavailable)
    }

    /// This thread's connection. The API runs one single-threaded runtime per core: a
    /// connection per thread keeps each request and its connection's driver on one thread, with
    /// no cross-thread wake-up per round trip (measured: that alone cost a fifth of the token
    /// server's CPU per request).
    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        CONNECTIONS.with(|c| {
            let mut c = c.borrow_mut();
            if let Some((_, m)) = c.iter().find(|(id, _)| *id == self.id) {
                return Ok(m.clone());
            }
            let m =
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.manager.clone())
                    .map_err(|_| StoreError::Unavailable)?;
            c.push((self.id, m.clone()));
            Ok(m)
        })
    }

    fn keys(&self, principal: Principal<'_>, source: Option<IpAddr>) -> Keys {
        let p = match principal {
            Principal::Client(id) => digest(&[b"client", id.as_bytes()]),
            Principal::User {
                client_id,
                username,
            } => digest(&[b"user", client_id.as_bytes(), username.as_bytes()]),
        };
        let src = source.map(crate::lockout::source_bytes);
        let src = src.as_ref().map(|(b, n)| &b[..*n]);
        let pair = digest(&[b"pair", p.as_bytes(), src.unwrap_or(b"none")]);
        let pre = &self.prefix;
        Keys {
            good: format!("{pre}lg:{pair}"),
            pair: format!("{pre}lp:{pair}"),
            principal: format!("{pre}lb:{p}"),
            source: format!("{pre}ls:{}", digest(&[b"source", src.unwrap_or(b"none")])),
            has_source: source.is_some(),
        }
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis().max(1) as u64
    }

    async fn attempt_script(
        &self,
        keys: &Keys,
        outcome: &str,
        limits: Option<(&str, &Limits)>,
    ) -> Result<Result<(bool, Remaining), Refusal>, StoreError> {
        let c = self.cfg;
        let forget = c.max_delay.max(c.window) * 2;
        let pre = &self.prefix;
        let (rate_key, quota_key) = match limits {
            Some((id, _)) => {
                let d = digest(&[b"client", id.as_bytes()]);
                (format!("{pre}rl:{d}"), format!("{pre}rq:{d}"))
            }
            None => (format!("{pre}rl:none"), format!("{pre}rq:none")),
        };
        let l = limits.map(|(_, l)| *l).unwrap_or_default();
        let (rps, burst) = l.rate.unwrap_or((0, 0));
        let mut inv = self.attempt.prepare_invoke();
        inv.key(&keys.pair)
            .key(&keys.principal)
            .key(&keys.source)
            .key(&keys.good)
            .key(&rate_key)
            .key(&quota_key)
            .arg(outcome)
            .arg(c.free_failures)
            .arg(Self::ms(c.base_delay))
            .arg(Self::ms(c.max_delay))
            .arg(c.principal_budget.max(1))
            .arg(c.source_budget.max(1))
            .arg(Self::ms(c.window))
            .arg(Self::ms(c.known_good_ttl))
            .arg(Self::ms(forget))
            .arg(u8::from(keys.has_source))
            .arg(rps)
            .arg(burst)
            .arg(l.per_day.unwrap_or(0));
        let r: Vec<i64> = self.run(async |conn| inv.invoke_async(conn).await).await?;
        let left = |v: i64| u64::try_from(v).ok();
        Ok(match r.as_slice() {
            [0, charged, rate, quota, reset] => Ok((
                *charged == 1,
                Remaining {
                    rate: left(*rate),
                    quota: left(*quota),
                    quota_reset: left(*reset).unwrap_or(0),
                },
            )),
            [wait] if *wait > 0 => Err(Refusal::Guessing(Refused {
                retry_after: *wait as u64,
            })),
            [-1, wait, which] => Err(Refusal::Limited(Limited {
                retry_after: (*wait).max(1) as u64,
                over: if *which == 2 { Over::Quota } else { Over::Rate },
            })),
            _ => {
                // A reply the script cannot give: treat as Redis not answering sensibly.
                tracing::warn!(reply = ?r, "unexpected reply from the attempt script");
                return Err(StoreError::Unavailable);
            }
        })
    }

    pub(super) async fn attempt(
        &self,
        principal: Principal<'_>,
        source: Option<IpAddr>,
        outcome: Outcome,
        limits: Option<(&str, &Limits)>,
    ) -> Result<Result<Remaining, Refusal>, StoreError> {
        let keys = self.keys(principal, source);
        let o = match outcome {
            Outcome::Succeeded => "ok",
            Outcome::Void => "void",
            Outcome::Failed => "fail",
        };
        Ok(self.attempt_script(&keys, o, limits).await?.map(|(_, r)| r))
    }

    pub(super) async fn begin(
        &self,
        principal: Principal<'_>,
        source: Option<IpAddr>,
    ) -> Result<Result<Charged, Refused>, StoreError> {
        let keys = self.keys(principal, source);
        Ok(match self.attempt_script(&keys, "begin", None).await? {
            Ok((charged, _)) => Ok(Charged { keys, charged }),
            Err(Refusal::Guessing(r)) => Err(r),
            // No limits are passed with `begin`.
            Err(Refusal::Limited(l)) => Err(Refused {
                retry_after: l.retry_after,
            }),
        })
    }

    pub(super) async fn finish(&self, c: Charged, success: bool) -> Result<(), StoreError> {
        let cfg = self.cfg;
        let mut inv = self.finish.prepare_invoke();
        inv.key(&c.keys.pair)
            .key(&c.keys.principal)
            .key(&c.keys.source)
            .key(&c.keys.good)
            .arg(if success { "ok" } else { "void" })
            .arg(u8::from(c.charged))
            .arg(cfg.principal_budget.max(1))
            .arg(cfg.source_budget.max(1))
            .arg(Self::ms(cfg.window))
            .arg(Self::ms(cfg.known_good_ttl))
            .arg(u8::from(c.keys.has_source));
        self.run(async |conn| inv.invoke_async::<i64>(conn).await)
            .await
            .map(|_| ())
    }

    fn token_keys(&self, jti: &str, chain: Option<&str>) -> (String, String, String) {
        let pre = &self.prefix;
        (
            format!("{pre}rv:{jti}"),
            chain.map_or_else(String::new, |c| format!("{pre}rc:{c}")),
            format!("{pre}sp:{jti}"),
        )
    }

    pub(super) async fn spend(
        &self,
        jti: &str,
        chain: &str,
        ttl: i64,
        rotate: bool,
        chain_ttl: i64,
    ) -> Result<Spend, StoreError> {
        let (revoked, chain_revoked, spent) = self.token_keys(jti, Some(chain));
        let mut inv = self.spend.prepare_invoke();
        inv.key(&revoked)
            .key(&chain_revoked)
            .key(&spent)
            .arg(u8::from(rotate))
            .arg(ttl.max(1))
            .arg(chain_ttl.max(1));
        let r: i64 = self.run(async |conn| inv.invoke_async(conn).await).await?;
        Ok(match r {
            0 => Spend::Fresh,
            1 => Spend::Reused,
            _ => Spend::Revoked,
        })
    }

    pub(super) async fn first_use(&self, id: &str, ttl: i64) -> Result<bool, StoreError> {
        let key = format!(
            "{}as:{}",
            self.prefix,
            digest(&[b"assertion", id.as_bytes()])
        );
        let set: Option<String> = self
            .run(async |conn| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl.max(1))
                    .query_async(conn)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    pub(super) async fn revoke(
        &self,
        jti: &str,
        ttl: i64,
        chain: Option<(&str, i64)>,
    ) -> Result<(), StoreError> {
        let (revoked, chain_revoked, _) = self.token_keys(jti, chain.map(|(c, _)| c));
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&revoked)
            .arg(1)
            .arg("EX")
            .arg(ttl.max(1))
            .ignore();
        if let Some((_, chain_ttl)) = chain {
            pipe.cmd("SET")
                .arg(&chain_revoked)
                .arg(1)
                .arg("EX")
                .arg(chain_ttl.max(1))
                .ignore();
        }
        self.run(async |conn| pipe.query_async::<()>(conn).await)
            .await
    }

    pub(super) async fn token_state(
        &self,
        jti: &str,
        chain: Option<&str>,
    ) -> Result<TokenState, StoreError> {
        let (revoked, chain_revoked, spent) = self.token_keys(jti, chain);
        let keys: Vec<&str> = if chain.is_some() {
            vec![&revoked, &chain_revoked, &spent]
        } else {
            vec![&revoked, &spent]
        };
        let v: Vec<Option<String>> = self
            .run(async |conn| redis::cmd("MGET").arg(&keys).query_async(conn).await)
            .await?;
        let set = |i: usize| v.get(i).is_some_and(Option::is_some);
        Ok(if chain.is_some() {
            TokenState {
                revoked: set(0),
                chain_revoked: set(1),
                spent: set(2),
            }
        } else {
            TokenState {
                revoked: set(0),
                chain_revoked: false,
                spent: set(1),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::digest;

    #[test]
    fn digests_are_stable_and_separate_their_parts() {
        assert_eq!(digest(&[b"client", b"a"]), digest(&[b"client", b"a"]));
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_eq!(digest(&[b"x"]).len(), 32);
        assert!(!digest(&[b"client", b"billing-app"]).contains("billing"));
    }
}
