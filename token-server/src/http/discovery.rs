//! Discovery (RFC 8414 and OpenID Connect Discovery) and the JWKS, served from bodies serialized
//! once per snapshot.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tessera_crds::auth_policy::SigningAlgorithm;

/// The metadata document.
pub fn document(issuer: &str, algorithms: &[SigningAlgorithm]) -> Value {
    let base = issuer.trim_end_matches('/');
    let algs: Vec<&str> = algorithms.iter().map(|a| a.as_str()).collect();
    let auth = [
        "client_secret_basic",
        "client_secret_post",
        "tls_client_auth",
        "self_signed_tls_client_auth",
    ];
    json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/oauth2/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "grant_types_supported": ["client_credentials", "password", "refresh_token"],
        "token_endpoint_auth_methods_supported": auth,
        "introspection_endpoint_auth_methods_supported": auth,
        "revocation_endpoint_auth_methods_supported": auth,
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "access_token_signing_alg_values_supported": algs,
        "code_challenge_methods_supported": [],
        "tls_client_certificate_bound_access_tokens": true,
    })
}

fn cached(
    st: &AppState,
    pick: fn(&crate::state::Served) -> axum::body::Bytes,
    cache: &'static str,
) -> Response {
    match st.served.load_full() {
        Some(s) => {
            let mut resp = pick(&s).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            resp
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "not loaded yet").into_response(),
    }
}

/// `GET /.well-known/jwks.json`. Validators may cache it for a minute; new keys are published
/// long before they sign, so a cached copy stays good.
pub async fn jwks(State(st): State<AppState>) -> Response {
    cached(&st, |s| s.jwks.clone(), "public, max-age=60")
}

/// `GET /.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`.
pub async fn metadata(State(st): State<AppState>) -> Response {
    cached(&st, |s| s.discovery.clone(), "public, max-age=300")
}
