//! Where the snapshot comes from. A source builds a complete [`Served`] view and publishes it with
//! one atomic swap; a change that fails to load is rejected whole and the last good view keeps
//! serving. Two sources: `dir` (a folder of manifests, watched) and `kube` (watch caches on the
//! custom resources and the keys Secret).

pub mod dir;
pub mod kube;
pub mod service_accounts;
// The policy-data document (written by the operator, read here) is part of the API crate.
pub use tessera_crds::policy_data;

use crate::state::AppState;
use jiff::Timestamp;

/// Records the outcome of a load attempt on the shared status and metrics.
pub fn record(st: &AppState, result: &Result<(), String>, now: Timestamp) {
    let mut status = st.status();
    match result {
        Ok(()) => {
            status.loads += 1;
            if status.last_error.take().is_some() {
                tracing::info!("the configuration loads again; serving it");
            }
            status.last_error_at = None;
            status.error_logged_at = None;
        }
        Err(e) => {
            status.failures += 1;
            let changed = status.last_error.as_deref() != Some(e.as_str());
            let due = status
                .error_logged_at
                .is_none_or(|t| t.elapsed() >= REMINDER);
            status.last_error = Some(e.clone());
            status.last_error_at = Some(now);
            let log = changed || due;
            if log {
                status.error_logged_at = Some(std::time::Instant::now());
            }
            let failures = status.failures;
            drop(status);
            st.metrics.record_reload_failure();
            if !log {
                tracing::debug!(error = %e, "configuration still rejected");
                return;
            }
            // Say what is served, not what one would hope is.
            match st.served.load_full() {
                Some(s) => tracing::error!(
                    error = %e,
                    failures,
                    generation = s.generation,
                    loaded_at = %s.loaded_at,
                    reminder = !changed,
                    "configuration rejected; still serving the last good snapshot (generation {}, loaded {})",
                    s.generation,
                    s.loaded_at
                ),
                None => tracing::error!(
                    error = %e,
                    failures,
                    reminder = !changed,
                    "configuration rejected and nothing loaded yet: token requests get 503 temporarily_unavailable until it loads"
                ),
            }
        }
    }
}

/// How often an unchanged load error is logged again.
pub const REMINDER: std::time::Duration = std::time::Duration::from_secs(60);
