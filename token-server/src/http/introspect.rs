//! RFC 7662 introspection. The caller authenticates; it learns about a token only if the token was
//! issued to it, or if it is a resource server of one of the token's audiences (a Credential's
//! `introspects`, or the API's proxy key). Being allowed to *call* an API is not enough: that
//! would let every client of an API read the claims of every other client's tokens.
//! Anything else, including tokens that are invalid, expired or revoked, is `{"active": false}`.

use super::request;
use crate::error::OAuthError;
use crate::state::{AppState, Served};
use crate::store::TokenState;
use crate::token::claims::{AccessClaims, RefreshClaims};
use crate::token::{jwt, sealed};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::time::Instant;
use tessera_crds::model::Client;

/// A token this server issued, opened and verified.
pub enum Found {
    /// An access token (JWT or opaque).
    Access(AccessClaims, &'static str),
    /// A refresh token.
    Refresh(RefreshClaims),
}

/// Opens or verifies a token of any kind this server issues.
pub fn find(served: &Served, issuer: &str, token: &str, now: Timestamp) -> Option<Found> {
    if token.starts_with("trt.") {
        return sealed::open(&served.keys, sealed::Kind::Refresh, token).map(Found::Refresh);
    }
    if token.starts_with("tat.") {
        return sealed::open(&served.keys, sealed::Kind::Access, token)
            .map(|c| Found::Access(c, "opaque"));
    }
    if token.len() > sealed::MAX_SEALED_LEN {
        return None;
    }
    let jws = jwt::parse_unverified(token)?;
    let key = served.keys.published(&jws.kid, now)?;
    // The key decides the algorithm: a header that names another one is a forgery attempt (or a
    // broken client) even if the signature happens to verify under the key's own algorithm.
    if jws.alg != key.alg.as_str() {
        return None;
    }
    if !key.verify(jws.signing_input.as_bytes(), &jws.signature) {
        return None;
    }
    let claims: AccessClaims = serde_json::from_slice(&jws.payload).ok()?;
    (claims.iss == issuer).then_some(Found::Access(claims, "jwt"))
}

fn client_still_valid(served: &Served, client_id: &str, iat: i64, now: Timestamp) -> bool {
    served
        .snapshot
        .client(client_id)
        .is_some_and(|c| c.is_active(now) && c.not_before.is_none_or(|nb| iat > nb.as_second()))
}

/// The introspection answer for `caller` about a token found with [`find`], given what the
/// security state holds about it.
pub fn inspect(
    served: &Served,
    issuer: &str,
    caller: &Client,
    found: Option<Found>,
    state: TokenState,
    now: Timestamp,
) -> Value {
    let inactive = json!({ "active": false });
    let t = now.as_second();
    match found {
        Some(Found::Access(c, format)) => {
            let live = c.exp.is_none_or(|e| e > t) && c.nbf <= t + 60;
            let revoked = state.revoked;
            // Resource servers see tokens for their audience; any other client only its own.
            let allowed = caller.client_id == c.client_id
                || c.aud.as_slice().iter().any(|a| caller.serves(a));
            if !live || revoked || !allowed || !client_still_valid(served, &c.client_id, c.iat, now)
            {
                return inactive;
            }
            let mut v = json!({
                "active": true,
                "client_id": c.client_id,
                "token_type": "Bearer",
                "sub": c.sub,
                "aud": c.aud,
                "iss": c.iss,
                "iat": c.iat,
                "nbf": c.nbf,
                "jti": c.jti,
                "tessera_format": format,
            });
            if let Some(obj) = v.as_object_mut() {
                if let Some(exp) = c.exp {
                    obj.insert("exp".into(), exp.into());
                }
                if let Some(scope) = &c.scope {
                    obj.insert("scope".into(), scope.clone().into());
                }
                if let Some(cnf) = &c.cnf {
                    obj.insert("cnf".into(), json!({ "x5t#S256": cnf.x5t_s256 }));
                }
                for (k, val) in &c.extra {
                    obj.entry(k.clone()).or_insert_with(|| val.clone().into());
                }
            }
            v
        }
        Some(Found::Refresh(r)) => {
            if r.exp <= t
                || state.revoked
                || state.chain_revoked
                || state.spent
                || caller.client_id != r.client_id
                || !client_still_valid(served, &r.client_id, r.iat, now)
            {
                return inactive;
            }
            let mut v = json!({
                "active": true,
                "client_id": r.client_id,
                "token_type": "refresh_token",
                "sub": r.sub,
                "aud": r.aud,
                "scope": r.scope.join(" "),
                "iat": r.iat,
                "exp": r.exp,
                "iss": issuer,
            });
            if let (Some(obj), Some(u)) = (v.as_object_mut(), &r.username) {
                obj.insert("username".into(), u.clone().into());
            }
            v
        }
        None => inactive,
    }
}

/// `POST /oauth2/introspect`.
pub async fn handle(State(st): State<AppState>, mut req: Request) -> Response {
    let started = Instant::now();
    let request_id = super::request_id::tag(&mut req);
    let result = super::common::with_timeout(&st, process(&st, req)).await;
    super::common::finish(
        &st,
        "/oauth2/introspect",
        "none",
        started,
        &request_id,
        result.map(|v| axum::Json(v).into_response()),
    )
}

async fn process(st: &AppState, req: Request) -> Result<Value, OAuthError> {
    let served = super::common::served(st)?;
    let req = request::read(req, st.config.body_limit, false, &st.config.trusted_proxies).await?;
    let now = (st.clock)();
    let client = super::common::authenticate_client(st, &served, &req, now, false, false)
        .await?
        .client;
    let token = req.params.require("token")?;
    let found = find(&served, &st.config.issuer, token, now);
    // Revocation is the state every replica shares: when it cannot be read, the answer is 503
    // (retry), never an `active: true` that may be stale.
    let state = match &found {
        Some(Found::Access(c, _)) => st.store.token_state(&c.jti, None, now.as_second()).await?,
        Some(Found::Refresh(r)) => {
            st.store
                .token_state(&r.jti, Some(&r.chain), now.as_second())
                .await?
        }
        None => TokenState::default(),
    };
    Ok(inspect(
        &served,
        &st.config.issuer,
        &client,
        found,
        state,
        now,
    ))
}
