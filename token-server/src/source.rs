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
            status.last_error = None;
            status.last_error_at = None;
        }
        Err(e) => {
            status.failures += 1;
            status.last_error = Some(e.clone());
            status.last_error_at = Some(now);
            drop(status);
            st.metrics.record_reload_failure();
            tracing::error!(error = %e, "configuration change rejected; still serving the last good snapshot");
        }
    }
}
