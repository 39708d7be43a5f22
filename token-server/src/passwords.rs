//! Password checks (argon2id, 19 MiB and tens of milliseconds each): the one thing an
//! unauthenticated caller can make expensive (a proxy key's `-` needs no secret).
//! [`PasswordChecks`] bounds it: a few slots sized to the cores, a short wait for one, then 503
//! with `Retry-After`; a check whose request is gone by the time its slot comes up is skipped.
//! Memory is then at most slots × 19 MiB, whatever the number of requests. An unknown user costs
//! the same as a wrong password, so timing does not reveal who exists.

use crate::error::OAuthError;
use argon2::{Argon2, PasswordHash};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tessera_crds::model::UserPool;

// A valid hash (argon2's default cost, as `hash-password` makes) of a random password nobody
// kept: verifying against it costs what a real user costs. A constant, so that no check ever
// hashes twice (computing it at first use cost a second 19 MiB).
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$zz+WNrhNdIyyXbp7KNBaaw$UKw1mLNcZJ4IDcdbxccr8k204qZk2XJjwzTzmFMWve0";

/// Largest argon2 cost accepted in a stored hash: a hash with a huge `m` in a user pool would
/// make every sign-in allocate it.
const MAX_M_COST_KIB: u32 = 64 * 1024;
const MAX_T_COST: u32 = 10;
const MAX_P_COST: u32 = 4;

/// Password checks that may run at once by default: half the CPUs (at least 1, at most 4), so a
/// flood of password requests leaves the other half to every other request, and memory for
/// hashing stays at a few times 19 MiB.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4))
}

/// The bounded slots password checks run in: one worker thread per slot. A fixed set of threads
/// matters for memory, not only for CPU: the allocator keeps a thread's freed 19 MiB for that
/// thread's next hash, so hashes spread over a growing blocking pool would each leave one behind.
pub struct PasswordChecks {
    slots: Arc<tokio::sync::Semaphore>,
    jobs: std::sync::Mutex<std::sync::mpsc::SyncSender<Job>>,
    wait: Duration,
}

impl std::fmt::Debug for PasswordChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChecks")
            .field("available", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

struct Job {
    pool: Option<Arc<UserPool>>,
    username: String,
    password: String,
    cancelled: Arc<AtomicBool>,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// Marks the check cancelled when the request's future is dropped (timeout, client gone).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl PasswordChecks {
    /// `slots` checks at once; a request waits up to two seconds for one.
    pub fn new(slots: usize) -> Self {
        Self::with_wait(slots, Duration::from_secs(2))
    }

    fn with_wait(slots: usize, wait: Duration) -> Self {
        let slots = slots.max(1);
        // Never more queued than slots: a job is only sent by the holder of a slot.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(slots);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..slots {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                            rx.recv()
                        };
                        let Ok(job) = job else { return };
                        // The request may have timed out while its job was queued.
                        if job.cancelled.load(Ordering::Relaxed) {
                            continue;
                        }
                        let ok =
                            verify_user_in(&mut memory, job.pool, &job.username, &job.password);
                        let _ = job.reply.send(ok);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password-check thread");
            }
        }
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            jobs: std::sync::Mutex::new(tx),
            wait,
        }
    }

    /// Checks in a slot; [`OAuthError::Busy`] if no slot frees within the wait.
    pub async fn verify(
        &self,
        pool: Option<Arc<UserPool>>,
        username: String,
        password: String,
    ) -> Result<bool, OAuthError> {
        let Ok(Ok(_slot)) = tokio::time::timeout(self.wait, self.slots.acquire()).await else {
            return Err(OAuthError::Busy { retry_after: 1 });
        };
        let cancelled = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancelled.clone());
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            pool,
            username,
            password,
            cancelled,
            reply,
        };
        // Never blocks: a cancelled request frees its slot while its job may still be queued,
        // so the queue can be full; that is busy too.
        match self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_send(job)
        {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                return Err(OAuthError::Busy { retry_after: 1 });
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(OAuthError::ServerError(
                    "the password-check threads are gone".into(),
                ));
            }
        }
        // The slot is held until the worker answers, so at most `slots` hashes run or wait.
        answer
            .await
            .map_err(|_| OAuthError::ServerError("a password check ended without an answer".into()))
    }

    /// Slots free now (for tests and metrics).
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

fn cost_ok(h: &PasswordHash) -> bool {
    argon2::Params::try_from(h).is_ok_and(|p| {
        p.m_cost() <= MAX_M_COST_KIB && p.t_cost() <= MAX_T_COST && p.p_cost() <= MAX_P_COST
    })
}

/// True if the user is in the pool with this password. Blocking: run it in [`PasswordChecks`].
pub fn verify_user(pool: Option<Arc<UserPool>>, username: &str, password: &str) -> bool {
    verify_user_in(&mut Vec::new(), pool, username, password)
}

/// [`verify_user`] with the argon2 memory in `memory`, kept for the next check: a worker
/// allocates its 19 MiB once instead of once per check.
fn verify_user_in(
    memory: &mut Vec<argon2::Block>,
    pool: Option<Arc<UserPool>>,
    username: &str,
    password: &str,
) -> bool {
    let stored = pool
        .as_ref()
        .and_then(|p| p.hash_of(username))
        .map(str::to_owned);
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| DUMMY.to_owned());
    let ok = PasswordHash::new(&hash)
        .is_ok_and(|h| cost_ok(&h) && matches(memory, &h, password.as_bytes()));
    ok && known
}

/// Recomputes `hash` for `password` in `memory` (argon2's own `hash_password_into_with_memory`)
/// and compares in constant time.
fn matches(memory: &mut Vec<argon2::Block>, hash: &PasswordHash, password: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = argon2::Params::try_from(hash) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.as_bytes().len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
        .is_ok()
        && bool::from(out.ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_with_an_outsized_cost_never_run() {
        use argon2::PasswordHasher;
        let huge = argon2::Params::new(MAX_M_COST_KIB * 2, 1, 1, None).expect("params");
        let hash = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, huge)
            .hash_password(b"right")
            .expect("hash")
            .to_string();
        let pool = Arc::new(UserPool::from_iter([("big".to_owned(), hash)]));
        assert!(!verify_user(Some(pool), "big", "right"));
    }

    #[tokio::test]
    async fn past_the_slots_requests_wait_then_get_busy() {
        let checks = Arc::new(PasswordChecks::with_wait(1, Duration::from_millis(50)));
        let held = checks.slots.clone().acquire_owned().await.expect("slot");
        let r = checks.verify(None, "a".into(), "b".into()).await;
        assert!(
            matches!(r, Err(OAuthError::Busy { retry_after: 1 })),
            "{r:?}"
        );
        drop(held);
        assert_eq!(checks.verify(None, "a".into(), "b".into()).await, Ok(false));
        assert_eq!(checks.available(), 1, "the slot is given back");
    }

    #[test]
    fn unknown_users_and_wrong_passwords_fail() {
        use argon2::PasswordHasher;
        let hash = Argon2::default()
            .hash_password(b"right")
            .expect("hash")
            .to_string();
        let pool = Arc::new(UserPool::from_iter([("alice".to_owned(), hash)]));
        assert!(verify_user(Some(pool.clone()), "alice", "right"));
        assert!(!verify_user(Some(pool.clone()), "alice", "wrong"));
        assert!(!verify_user(Some(pool.clone()), "bob", "right"));
        assert!(!verify_user(None, "alice", "right"));
        assert!(
            !verify_user(
                Some(pool),
                "nobody",
                "tessera-dummy-password-for-unknown-users"
            ),
            "the dummy hash never admits"
        );
    }
}
