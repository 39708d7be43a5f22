//! RFC 6749 §4.3: a user of the policy's pool signs in through the client. The password itself
//! is checked in `crate::passwords` (bounded slots); this is the grant around it.

use super::{GrantCtx, Issued, Subject, issue, select_audiences, select_scopes};
use crate::error::OAuthError;

/// Longest username or password accepted (argon2 work must not be attacker-sized).
pub const MAX_CREDENTIAL_LEN: usize = 1024;

/// The username and password of the request, checked for presence and size.
pub fn read_user(params: &crate::form::Params) -> Result<(String, String), OAuthError> {
    let username = params.require("username")?;
    let password = params.require("password")?;
    if username.len() > MAX_CREDENTIAL_LEN || password.len() > MAX_CREDENTIAL_LEN {
        return Err(OAuthError::InvalidRequest(format!(
            "username and password are at most {MAX_CREDENTIAL_LEN} bytes"
        )));
    }
    Ok((username.to_owned(), password.to_owned()))
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
