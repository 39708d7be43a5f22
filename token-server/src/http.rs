//! The public API router.

pub mod client_auth;
pub mod discovery;
pub mod form;
pub mod introspect;
pub mod request;
pub mod revoke;
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
