//! The admin listener: `/healthz`, `/readyz` (caches synced; leader, last pass, key state) and
//! `/metrics`.

use crate::metrics::Metrics;
use crate::run::Health;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::{Arc, Mutex};

/// The admin router.
pub fn router(health: Arc<Mutex<Health>>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let h = health.lock().map(|h| h.clone()).unwrap_or_default();
                async move {
                    // Ready once the caches are warm: a follower is ready too (it takes over at
                    // once). A blocked key set is reported but keeps the pod in rotation, since
                    // restarting it would not fix the Secret.
                    let code = if h.synced {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, axum::Json(h))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
}
