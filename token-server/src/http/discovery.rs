//! Discovery (RFC 8414 and OpenID Connect Discovery) and the JWKS, served from bodies serialized
//! once per snapshot.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

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
