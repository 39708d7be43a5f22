//! RFC 7009 revocation. A client revokes its own tokens: a refresh token (and with it the whole
//! chain it belongs to), or an access token (introspection then answers inactive; JWTs already
//! handed to offline validators stay valid until they expire, which is why they are short-lived).
//! An invalid or unknown token is answered 200, as the RFC requires.

use super::introspect::{Found, find};
use crate::error::OAuthError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tessera_crds::model::ClientKind;

/// `POST /oauth2/revoke`.
pub async fn handle(State(st): State<AppState>, mut req: Request) -> Response {
    let started = Instant::now();
    let request_id = super::request_id::tag(&mut req);
    let result = super::common::with_timeout(&st, process(&st, req)).await;
    super::common::finish(
        &st,
        "/oauth2/revoke",
        "none",
        started,
        &request_id,
        result.map(|()| StatusCode::OK.into_response()),
    )
}

async fn process(st: &AppState, req: Request) -> Result<(), OAuthError> {
    let served = super::common::served(st)?;
    let req =
        super::request::read(req, st.config.body_limit, false, &st.config.trusted_proxies).await?;
    let now = (st.clock)();
    let client = super::common::authenticate_client(st, &served, &req, now, false, false)
        .await?
        .client;
    let token = req.params.require("token")?;
    if let Some(hint) = req.params.get("token_type_hint")
        && !matches!(hint, "access_token" | "refresh_token")
    {
        return Err(OAuthError::InvalidRequest(format!(
            "token_type_hint `{}` is not one of access_token, refresh_token",
            hint.chars().take(32).collect::<String>()
        )));
    }
    let t = now.as_second();
    let revoked = |kind: &'static str, jti: &str| {
        st.audit.emit(
            crate::audit::Kind::TokenRevoked,
            now,
            &req.audit_cx(),
            |e| {
                e.by_client(&client, None);
                e.target.token_type = Some(kind);
                e.target.token_id = Some(jti.to_owned());
            },
        );
    };
    // RFC 7009 §2.2.1: 503 when the revocation cannot be recorded now (the shared state does
    // not answer, or the in-process store is full); the client retries.
    match find(&served, &st.config.issuer, token, now) {
        Some(Found::Refresh(r)) => {
            if r.client_id != client.client_id {
                return Err(OAuthError::UnauthorizedClient(
                    "the token was issued to another client".into(),
                ));
            }
            st.store
                .revoke(&r.jti, r.exp, Some((&r.chain, r.exp.max(t) + 86_400)), t)
                .await?;
            // In the cluster, every replica must refuse it: the Credential's notBefore moves
            // to now through the API. Its granularity is the client (no per-token objects in
            // etcd), so this signs the client out of all refresh tokens issued until now.
            if let Some(w) = &st.cluster_revocation
                && client.kind == ClientKind::Credential
                && client.not_before.is_none_or(|nb| nb.as_second() < t)
            {
                w.revoke(&client.owner, now).await.map_err(|e| {
                    tracing::warn!(client = %client.owner, error = %e, "could not record a revocation in the cluster");
                    OAuthError::Unavailable(
                        "the revocation could not be recorded in the cluster; retry the request".into(),
                    )
                })?;
            }
            revoked("refresh", &r.jti);
        }
        Some(Found::Access(c, _)) => {
            if c.client_id != client.client_id {
                return Err(OAuthError::UnauthorizedClient(
                    "the token was issued to another client".into(),
                ));
            }
            // Immortal tokens are remembered for a year; revoke the Credential to end them all.
            st.store
                .revoke(&c.jti, c.exp.unwrap_or(t + 365 * 86_400), None, t)
                .await?;
            revoked("access", &c.jti);
        }
        None => {}
    }
    Ok(())
}
