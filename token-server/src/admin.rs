//! The admin router, on its own listener: `/healthz` (the process runs), `/readyz` (a snapshot is
//! served; details of its age, size, problems and the last reload error) and `/metrics`.

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// Most problems listed in `/readyz`.
const MAX_LISTED: usize = 50;

/// The admin router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(st): State<AppState>) -> Response {
    let now = (st.clock)();
    let status = st.status().clone();
    let served = st.served.load_full();
    let body = match &served {
        None => json!({
            "ready": false,
            "reason": "no snapshot loaded yet",
            "source": status.source,
            "lastError": status.last_error,
        }),
        Some(s) => {
            let problems = s.snapshot.report().with_problems();
            let listed: Vec<String> = problems
                .iter()
                .take(MAX_LISTED)
                .map(|(o, ps)| {
                    format!(
                        "{o}: {}",
                        ps.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                })
                .collect();
            let c = s.snapshot.counts();
            json!({
                "ready": true,
                "source": status.source,
                "generation": s.generation,
                "loadedAt": s.loaded_at.to_string(),
                "snapshotAgeSeconds": (now.as_second() - s.loaded_at.as_second()).max(0),
                "objects": {
                    "apiProxies": c.api_proxies, "authPolicies": c.auth_policies, "credentials": c.credentials,
                    "roles": c.roles, "secrets": c.secrets, "clients": c.clients,
                },
                "objectsWithProblems": problems.len(),
                "problems": listed,
                "lastError": status.last_error,
                "lastErrorAt": status.last_error_at.map(|t| t.to_string()),
                // Set while the API server cannot be reached: the snapshot is the last known good.
                "sourceUnreachableSince": status.stale_since().map(|t| t.to_string()),
                // Ready either way: client_credentials and JWT validation go on while Redis is
                // down (refresh, revocation and introspection answer 503 until it is back).
                "state": st.store.health(),
                "keys": {
                    "ephemeral": s.keys.ephemeral,
                    "signingAlgorithms": s.keys.algorithms(now).iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                },
            })
        }
    };
    let code = if served.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    let now = (st.clock)();
    let stale = st.status().stale_since();
    st.metrics
        .set_source_unreachable(stale.map_or(0, |t| (now.as_second() - t.as_second()).max(0)));
    let mut resp = st.metrics.encode(now).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
