//! The grants: pure functions from (snapshot view, authenticated client, request, clock) to an
//! issued token or an RFC 6749 error. Password hashing is the only slow step; the handler runs it
//! on the blocking pool and passes the verified user in.
//!
//! ```text
//! request ─► scope selection ─► audience selection ─► access token (JWT | sealed) ─► refresh token ─► response shaping
//! ```

pub mod client_credentials;
pub mod password;
pub mod refresh_token;
pub mod response;

use crate::error::OAuthError;
use crate::form::Params;
use crate::state::Served;
use crate::store::Store;
use crate::token::claims::{AccessClaims, Audience, Confirmation, RefreshClaims};
use crate::token::{jwt, sealed};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use std::sync::Arc;
use tessera_crds::auth_policy::{ScopeMismatch, TokenType};
use tessera_crds::model::Client;

/// What a grant works with.
pub struct GrantCtx<'a> {
    /// The view.
    pub served: &'a Served,
    /// The authenticated client.
    pub client: &'a Client,
    /// The request parameters.
    pub params: &'a Params,
    /// The `iss`.
    pub issuer: &'a str,
    /// Now.
    pub now: Timestamp,
    /// Revoked and spent ids.
    pub store: &'a Store,
    /// The client certificate's thumbprint, when it authenticated with one.
    pub cnf: Option<Confirmation>,
}

/// A token issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The access token.
    pub access_token: String,
    /// Its lifetime; `None` for immortal tokens.
    pub expires_in: Option<u64>,
    /// Granted scopes.
    pub scope: Vec<Arc<str>>,
    /// The refresh token, if the policy issues them.
    pub refresh_token: Option<String>,
    /// The access token's `jti`: names it in the audit trail without being it.
    pub token_id: String,
    /// Its audiences.
    pub audience: crate::token::claims::Audience,
    /// The user, for password grants and their refreshes.
    pub username: Option<String>,
}

/// Who the token is about.
pub struct Subject {
    /// `sub`.
    pub sub: String,
    /// The user, for the password grant.
    pub username: Option<String>,
}

/// A random 128-bit id, base64url.
pub fn new_id() -> Result<String, OAuthError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| OAuthError::ServerError("random generator failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// Scopes to grant: all the client holds when none are asked for; otherwise per the policy's
/// mismatch handling.
pub fn select_scopes(
    client: &Client,
    requested: Option<&str>,
) -> Result<Vec<Arc<str>>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(client.scopes.clone());
    };
    let mut wanted: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    if let Some(bad) = wanted
        .iter()
        .find(|s| !tessera_crds::names::is_scope_token(s))
    {
        return Err(OAuthError::InvalidScope(format!(
            "`{}` is not a valid scope token",
            bad.chars().take(64).collect::<String>()
        )));
    }
    let (held, missing): (Vec<&str>, Vec<&str>) =
        wanted.into_iter().partition(|s| client.holds_scope(s));
    if !missing.is_empty() && client.policy.token_management.scope_mismatch == ScopeMismatch::Reject
    {
        return Err(OAuthError::InvalidScope(format!(
            "the client does not hold: {}",
            missing.join(" ")
        )));
    }
    if held.is_empty() {
        return Err(OAuthError::InvalidScope(
            "the client holds none of the requested scopes".into(),
        ));
    }
    Ok(held.into_iter().map(Arc::from).collect())
}

/// Audiences to put in the token: every API the client may call, or those named by RFC 8707
/// `resource` and `audience` parameters, each of which it must be allowed.
pub fn select_audiences(client: &Client, params: &Params) -> Result<Vec<String>, OAuthError> {
    let mut asked = params.all("resource");
    asked.extend(params.all("audience"));
    if asked.is_empty() {
        if client.audiences.is_empty() {
            return Err(OAuthError::InvalidTarget(
                "the client may call no API: add an ApiProxy to its acl or roles".into(),
            ));
        }
        return Ok(client.audiences.iter().map(|a| a.to_string()).collect());
    }
    asked.sort_unstable();
    asked.dedup();
    if let Some(bad) = asked.iter().find(|a| !client.may_call(a)) {
        return Err(OAuthError::InvalidTarget(format!(
            "the client may not call `{}`",
            bad.chars().take(256).collect::<String>()
        )));
    }
    Ok(asked.into_iter().map(str::to_owned).collect())
}

/// Mints the access token and, if the policy issues them, a refresh token.
pub fn issue(
    cx: &GrantCtx<'_>,
    subject: Subject,
    scope: Vec<Arc<str>>,
    aud: Vec<String>,
    chain: Option<&RefreshClaims>,
) -> Result<Issued, OAuthError> {
    let policy = &cx.client.policy;
    let iat = cx.now.as_second();
    let ttl = policy.access_ttl.map(|d| d.as_secs());
    let scope_str =
        (!scope.is_empty()).then(|| scope.iter().map(|s| &**s).collect::<Vec<_>>().join(" "));
    let username = subject.username.clone();
    let claims = AccessClaims {
        iss: cx.issuer.to_owned(),
        sub: subject.sub.clone(),
        aud: Audience::from_vec(aud.clone()),
        exp: ttl.map(|t| iat + t as i64),
        iat,
        nbf: iat,
        jti: new_id()?,
        client_id: cx.client.client_id.clone(),
        scope: scope_str,
        cnf: cx.cnf.clone(),
        extra: cx.client.claims.clone(),
    };
    let keys = &cx.served.keys;
    let access_token = match policy.token_type {
        TokenType::Jwt => {
            let key = keys.signer(policy.algorithm, cx.now).ok_or_else(|| {
                OAuthError::ServerError(format!(
                    "no active {} signing key in the key set",
                    policy.algorithm.as_str()
                ))
            })?;
            jwt::mint(key, &claims)
                .map_err(|e| OAuthError::ServerError(format!("minting a JWT: {e}")))?
        }
        TokenType::OAuth2 => sealed::seal(keys, sealed::Kind::Access, &claims)
            .map_err(|e| OAuthError::ServerError(format!("sealing a token: {e}")))?,
    };
    let refresh_token =
        match (policy.refresh, ttl) {
            (Some(r), Some(_)) if chain.is_none() || r.rotate => {
                let jti = new_id()?;
                let rc = RefreshClaims {
                    sub: subject.sub,
                    client_id: cx.client.client_id.clone(),
                    aud,
                    scope: scope.iter().map(|s| s.to_string()).collect(),
                    iat,
                    exp: iat + r.ttl.as_secs() as i64,
                    chain: chain.map_or_else(|| jti.clone(), |c| c.chain.clone()),
                    n: chain.map_or(0, |c| c.n + 1),
                    auth_time: chain.map_or(iat, |c| c.auth_time),
                    jti,
                    username: subject.username,
                    cnf: cx.cnf.clone(),
                };
                Some(sealed::seal(keys, sealed::Kind::Refresh, &rc).map_err(|e| {
                    OAuthError::ServerError(format!("sealing a refresh token: {e}"))
                })?)
            }
            _ => None,
        };
    Ok(Issued {
        token_id: claims.jti,
        audience: claims.aud,
        username,
        access_token,
        expires_in: ttl,
        scope,
        refresh_token,
    })
}
