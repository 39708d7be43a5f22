//! RFC 6749 §4.3: a user of the policy's pool signs in through the client.
//!
//! Checking the password is slow on purpose (argon2id, 19 MiB and tens of milliseconds each), so
//! it is the one thing an unauthenticated caller can make expensive (a proxy key's `-` needs no
//! secret). [`PasswordChecks`] bounds it: a few slots sized to the cores, a short wait for one,
//! then 503 with `Retry-After`; a check whose request is gone by the time its slot comes up is
//! skipped. Memory is then at most slots × 19 MiB, whatever the number of requests.
//! An unknown user costs the same as a wrong password, so timing does not reveal who exists.

use super::{GrantCtx, Issued, Subject, issue, select_audiences, select_scopes};
use crate::error::OAuthError;
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tessera_crds::model::UserPool;

/// Longest username or password accepted (argon2 work must not be attacker-sized).
pub const MAX_CREDENTIAL_LEN: usize = 1024;

// A valid hash of a random password: verifying against it costs what a real user costs.
static DUMMY: LazyLock<String> = LazyLock::new(|| {
    use argon2::PasswordHasher;
    Argon2::default()
        .hash_password(b"tessera-dummy-password-for-unknown-users")
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// The username and password of the request, checked for presence and size.
pub fn read_user(params: &crate::http::form::Params) -> Result<(String, String), OAuthError> {
    let username = params.require("username")?;
    let password = params.require("password")?;
    if username.len() > MAX_CREDENTIAL_LEN || password.len() > MAX_CREDENTIAL_LEN {
        return Err(OAuthError::InvalidRequest(format!(
            "username and password are at most {MAX_CREDENTIAL_LEN} bytes"
        )));
    }
    Ok((username.to_owned(), password.to_owned()))
}

/// Largest argon2 cost accepted in a stored hash: a hash with a huge `m` in a user pool would
/// make every sign-in allocate it.
const MAX_M_COST_KIB: u32 = 64 * 1024;
const MAX_T_COST: u32 = 10;
const MAX_P_COST: u32 = 4;

/// Password checks that may run at once by default: the cores, at most 4.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The bounded slots password checks run in.
#[derive(Debug)]
pub struct PasswordChecks {
    slots: Arc<tokio::sync::Semaphore>,
    wait: Duration,
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
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(slots.max(1))),
            wait: Duration::from_secs(2),
        }
    }

    /// Checks in a slot, on the blocking pool; [`OAuthError::Busy`] if no slot frees in time.
    pub async fn verify(
        &self,
        pool: Option<Arc<UserPool>>,
        username: String,
        password: String,
    ) -> Result<bool, OAuthError> {
        let Ok(Ok(slot)) =
            tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await
        else {
            return Err(OAuthError::Busy { retry_after: 1 });
        };
        let cancelled = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancelled.clone());
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            // The request may have timed out while the task waited for a thread.
            (!cancelled.load(Ordering::Relaxed)).then(|| verify_user(pool, &username, &password))
        })
        .await
        .map_err(|e| OAuthError::ServerError(format!("password check task: {e}")))?
        .ok_or_else(|| OAuthError::ServerError("password check cancelled".into()))
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
    let stored = pool
        .as_ref()
        .and_then(|p| p.hash_of(username))
        .map(str::to_owned);
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| DUMMY.clone());
    let ok = PasswordHash::new(&hash).is_ok_and(|h| {
        cost_ok(&h)
            && Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
    });
    ok && known
}

/// Issues a token for a verified user.
pub fn grant(cx: &GrantCtx<'_>, username: String) -> Result<Issued, OAuthError> {
    let scope = select_scopes(cx.client, cx.params.get("scope"))?;
    let aud = select_audiences(cx.client, cx.params)?;
    issue(
        cx,
        Subject {
            sub: username.clone(),
            username: Some(username),
        },
        scope,
        aud,
        None,
    )
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
        let checks = Arc::new(PasswordChecks {
            slots: Arc::new(tokio::sync::Semaphore::new(1)),
            wait: Duration::from_millis(50),
        });
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
