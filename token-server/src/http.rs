//! The public API router.

pub mod client_auth;
pub mod discovery;
pub mod form;
pub mod introspect;
pub mod request;
pub mod revoke;
pub mod source;
pub mod token;

use crate::state::AppState;
use axum::Router;
use axum::extract::{Request, State};
use axum::routing::{any, get};
use token::Endpoint;

fn token_route(endpoint: Endpoint) -> axum::routing::MethodRouter<AppState> {
    any(move |st: State<AppState>, req: Request| token::handle(st, endpoint, req))
}

/// Runs a handler's work under the request timeout. `tokio::time::timeout` polls the work first
/// and only registers a timer if it is not ready, so the usual request (its body in the same
/// packets as its headers, handled in one poll) costs no timer; a layer that arms a timer per
/// request cost an extra syscall on every request (measured with strace).
pub async fn with_timeout<T>(
    st: &AppState,
    work: impl std::future::Future<Output = Result<T, crate::error::OAuthError>>,
) -> Result<T, crate::error::OAuthError> {
    let limit = st.config.request_timeout;
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(crate::error::OAuthError::Timeout {
            secs: limit.as_secs(),
        }))
}

/// The served view, or `temporarily_unavailable` before the first load.
pub fn served(
    st: &AppState,
) -> Result<std::sync::Arc<crate::state::Served>, crate::error::OAuthError> {
    st.served.load_full().ok_or_else(|| {
        crate::error::OAuthError::Unavailable(
            "the token server has not loaded its configuration yet".into(),
        )
    })
}

/// Authenticates the client of a request against `served` and counts the method used.
/// `dash_allowed`: the grant accepts a proxy key's `-` secret.
pub fn authenticate_client(
    st: &AppState,
    served: &crate::state::Served,
    req: &request::OAuthRequest,
    now: jiff::Timestamp,
    dash_allowed: bool,
) -> Result<crate::auth::Authenticated, crate::error::OAuthError> {
    let creds = client_auth::read(&req.headers, &req.params, req.peer.is_some())?;
    let client = crate::auth::authenticate(crate::auth::AuthInput {
        snapshot: &served.snapshot,
        keys: &served.keys,
        lockout: &st.lockout,
        creds: &creds,
        addr: req.addr,
        now,
        instant: std::time::Instant::now(),
        dash_allowed,
        peer: req.peer.as_deref(),
        client_cas: &served.client_cas,
    })?;
    st.metrics.record_auth(client.method);
    tracing::debug!(client_id = %client.client.client_id, method = client.method, "client authenticated");
    Ok(client)
}

/// Ends a handler: counts the request and answers, with `Cache-Control: no-store` either way.
pub fn finish(
    st: &AppState,
    endpoint: &'static str,
    grant: &'static str,
    started: std::time::Instant,
    result: Result<axum::response::Response, crate::error::OAuthError>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    st.metrics
        .record_request(endpoint, grant, result.as_ref().err(), started.elapsed());
    match result {
        Ok(mut resp) => {
            crate::error::no_store(resp.headers_mut());
            resp
        }
        Err(e) => {
            if let crate::error::OAuthError::ServerError(detail) = &e {
                tracing::error!(endpoint, error = %detail, "request failed");
            }
            e.into_response()
        }
    }
}

/// The public router: token, introspection, revocation, discovery, JWKS.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/oauth2/token", token_route(Endpoint::OAuth2))
        .route("/connect/token", token_route(Endpoint::OAuth2))
        .route("/auth/jwt", token_route(Endpoint::AuthJwt))
        .route("/auth/token", token_route(Endpoint::AuthToken))
        .route("/credential/jwt", token_route(Endpoint::CredentialJwt))
        .route("/credential/token", token_route(Endpoint::CredentialToken))
        .route("/oauth2/introspect", any(introspect::handle))
        .route("/oauth2/revoke", any(revoke::handle))
        .route("/.well-known/jwks.json", get(discovery::jwks))
        .route("/.well-known/openid-configuration", get(discovery::metadata))
        .route("/.well-known/oauth-authorization-server", get(discovery::metadata))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "not_found", "error_description": "no such endpoint; see /.well-known/openid-configuration"}))) })
        .with_state(state)
}
