//! RFC 6749 §6: a refresh token for a new access token.
//!
//! Checks, in order: the token opens under our keys and is a refresh token; it was issued to this
//! client; it has not expired; the client was not revoked after it was issued (`notBefore`); its
//! chain was not revoked; the refresh limit is not reached; with rotation, it was not used before
//! (reuse revokes the whole chain, RFC 6819 §5.2.2.3). Scopes and audiences can only narrow, and
//! shrink to what the client holds now: a Role removed since stops granting.

use super::{GrantCtx, Issued, Subject, issue};
use crate::error::OAuthError;
use crate::store::Spend;
use crate::token::claims::RefreshClaims;
use crate::token::sealed;
use std::sync::Arc;

fn invalid(d: &str) -> OAuthError {
    OAuthError::InvalidGrant(d.to_owned())
}

/// Exchanges a refresh token. `reused` is set to the chain id when a rotated refresh token came
/// back (the chain is then revoked), for the audit trail.
pub async fn grant(cx: &GrantCtx<'_>, reused: &mut Option<String>) -> Result<Issued, OAuthError> {
    let token = cx.params.require("refresh_token")?;
    let rc: RefreshClaims = sealed::open(&cx.served.keys, sealed::Kind::Refresh, token)
        .ok_or_else(|| invalid("the refresh token is not valid"))?;
    let now = cx.now.as_second();
    if rc.client_id != cx.client.client_id {
        return Err(invalid("the refresh token was issued to another client"));
    }
    if rc.exp <= now {
        return Err(invalid("the refresh token has expired; authenticate again"));
    }
    if cx
        .client
        .not_before
        .is_some_and(|nb| rc.iat <= nb.as_second())
    {
        return Err(invalid("the refresh token was revoked; authenticate again"));
    }
    if rc.cnf.is_some() && rc.cnf != cx.cnf {
        return Err(invalid(
            "the refresh token is bound to another client certificate",
        ));
    }
    let policy = &cx.client.policy;
    let Some(refresh) = policy.refresh else {
        return Err(OAuthError::UnauthorizedClient(
            "this client's policy no longer issues refresh tokens".into(),
        ));
    };
    if refresh.max_refreshes.is_some_and(|max| rc.n >= max) {
        return Err(invalid(
            "the refresh limit of this token chain is reached; authenticate again",
        ));
    }

    let requested = cx.params.get("scope");
    let scope: Vec<Arc<str>> = match requested {
        None => rc
            .scope
            .iter()
            .filter(|s| cx.client.holds_scope(s))
            .map(|s| Arc::from(s.as_str()))
            .collect(),
        Some(req) => {
            let mut out = Vec::new();
            for s in req.split(' ').filter(|s| !s.is_empty()) {
                if !rc.scope.iter().any(|o| o == s) {
                    return Err(OAuthError::InvalidScope(format!(
                        "`{}` was not granted with the original token; a refresh can only narrow the scope",
                        s.chars().take(64).collect::<String>()
                    )));
                }
                if cx.client.holds_scope(s) && !out.iter().any(|o: &Arc<str>| &**o == s) {
                    out.push(Arc::from(s));
                }
            }
            out
        }
    };
    let aud: Vec<String> = rc
        .aud
        .iter()
        .filter(|a| cx.client.may_call(a))
        .cloned()
        .collect();
    if aud.is_empty() {
        return Err(invalid(
            "the client may no longer call any API this token was for",
        ));
    }

    // Checked and spent in one step on every replica's shared state (see `crate::store`). If
    // that state cannot answer, nothing is exchanged: the token stays usable later.
    match cx
        .store
        .spend_refresh(
            &rc.jti,
            &rc.chain,
            rc.exp,
            now,
            refresh.rotate,
            refresh.ttl * 2,
        )
        .await?
    {
        Spend::Fresh => {}
        Spend::Revoked => {
            return Err(invalid("the refresh token was revoked; authenticate again"));
        }
        // A rotated refresh token came back: someone holds a copy. Its chain is now revoked.
        Spend::Reused => {
            *reused = Some(rc.chain.clone());
            return Err(invalid(
                "the refresh token was already used; the token chain is revoked, authenticate again",
            ));
        }
    }
    let subject = Subject {
        sub: rc.sub.clone(),
        username: rc.username.clone(),
    };
    let mut issued = issue(cx, subject, scope, aud, Some(&rc))?;
    if !refresh.rotate {
        issued.refresh_token = None;
    }
    Ok(issued)
}
