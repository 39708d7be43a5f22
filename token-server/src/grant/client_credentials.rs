//! RFC 6749 §4.4: the client obtains a token for itself.

use super::{GrantCtx, Issued, Subject, issue, select_audiences, select_scopes};
use crate::error::OAuthError;

/// Issues a token whose subject is the client.
pub fn grant(cx: &GrantCtx<'_>) -> Result<Issued, OAuthError> {
    let scope = select_scopes(cx.client, cx.params.get("scope"))?;
    let aud = select_audiences(cx.client, cx.params)?;
    let subject = Subject {
        sub: cx.client.client_id.clone(),
        username: None,
    };
    issue(cx, subject, scope, aud, None)
}
