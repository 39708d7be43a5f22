//! The public API router.

pub mod client_auth;
pub mod common;
pub mod discovery;
pub mod introspect;
pub mod request;
pub mod request_id;
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
