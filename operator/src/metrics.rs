//! The operator's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of reconcile counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// ApiProxy, AuthPolicy, Credential, Role or KeySet.
    pub kind: String,
    /// `unchanged`, `written` or `error`.
    pub outcome: String,
}

/// Labels of error counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// What failed: `conflict`, `api`, `keys_blocked`, `event`.
    pub error: String,
}

/// Labels of key ages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlgLabels {
    /// RS256, ES256 or EdDSA.
    pub alg: String,
}

/// All metrics.
pub struct Metrics {
    registry: Registry,
    /// Objects reconciled, by kind and outcome.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Duration of a whole pass.
    pub pass_seconds: Histogram,
    /// Errors by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Age of the key signing for each algorithm.
    pub key_age: Family<AlgLabels, Gauge<f64, AtomicU64>>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// API writes made.
    pub writes: Counter,
    /// `--key-rotation`, in seconds (0: no scheduled rotation), for the rotation-overdue alert.
    pub rotation_interval: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tessera_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let pass_seconds = Histogram::new([0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0, 60.0]);
        let errors = Family::<ErrorLabels, Counter>::default();
        let key_age = Family::<AlgLabels, Gauge<f64, AtomicU64>>::default();
        let leader = Gauge::default();
        let writes = Counter::default();
        let rotation_interval = Gauge::default();
        registry.register(
            "key_rotation_interval_seconds",
            "The signing keys' rotation interval (--key-rotation; 0: rotated on demand only)",
            rotation_interval.clone(),
        );
        registry.register(
            "reconciles",
            "Objects reconciled, by kind and outcome",
            reconciles.clone(),
        );
        registry.register(
            "pass_duration_seconds",
            "Duration of a reconcile pass over all objects",
            pass_seconds.clone(),
        );
        registry.register("errors", "Errors, by kind", errors.clone());
        registry.register(
            "signing_key_age_seconds",
            "Age of the key signing for each algorithm",
            key_age.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "api_writes",
            "Writes sent to the API server",
            writes.clone(),
        );
        Self {
            registry,
            reconciles,
            pass_seconds,
            errors,
            key_age,
            leader,
            writes,
            rotation_interval,
        }
    }
}

impl Metrics {
    /// Counts reconciles.
    pub fn reconciled(&self, kind: &str, outcome: &str, n: u64) {
        if n > 0 {
            self.reconciles
                .get_or_create(&ReconcileLabels {
                    kind: kind.into(),
                    outcome: outcome.into(),
                })
                .inc_by(n);
        }
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: crate::error::ErrorKind) {
        self.errors
            .get_or_create(&ErrorLabels {
                error: kind.label().into(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
