//! RFC 6749 §4.3: a user of the policy's pool signs in through the client.
//!
//! Checking the password is slow on purpose (argon2id); [`verify_user`] runs on the blocking pool.
//! An unknown user costs the same as a wrong password, so timing does not reveal who exists.

use super::{GrantCtx, Issued, Subject, issue, select_audiences, select_scopes};
use crate::error::OAuthError;
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use std::sync::{Arc, LazyLock};
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

/// True if the user is in the pool with this password. Blocking: run it on the blocking pool.
pub fn verify_user(pool: Option<Arc<UserPool>>, username: &str, password: &str) -> bool {
    let stored = pool
        .as_ref()
        .and_then(|p| p.hash_of(username))
        .map(str::to_owned);
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| DUMMY.clone());
    let ok = PasswordHash::new(&hash).is_ok_and(|h| {
        Argon2::default()
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
