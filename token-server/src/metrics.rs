//! Prometheus metrics (prometheus-client): requests by endpoint, grant and outcome; latency;
//! client authentication methods; the snapshot's generation, age and size; reload failures.

use crate::error::OAuthError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tessera_crds::model::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    grant: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    /// `namespace/name` of the AuthPolicy (never a client_id: cardinality).
    policy: String,
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgLabels {
    alg: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type Histograms = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// The registry and its metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms,
    auth: Family<MethodLabels, Counter>,
    limited: Family<LimitLabels, Counter>,
    generation: Gauge,
    loaded_at: Gauge,
    age: Gauge<f64, AtomicU64>,
    objects: Family<KindLabels, Gauge>,
    problems: Gauge,
    reload_failures: Counter,
    propagation: Histogram,
    unreachable: Gauge,
    lockouts: Counter,
    signing_since: Family<AlgLabels, Gauge>,
    next_key_change: Gauge,
    /// The audit log's counters.
    pub audit: crate::audit::Counters,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Adds the security state's metrics (`tessera_state_*`).
    pub fn register_store(&mut self, store: &crate::store::StoreMetrics) {
        store.register(&mut self.registry);
    }

    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Histograms = Family::new_with_constructor(latency_histogram);
        let auth = Family::<MethodLabels, Counter>::default();
        let generation = Gauge::default();
        let loaded_at = Gauge::default();
        let age = Gauge::<f64, AtomicU64>::default();
        let objects = Family::<KindLabels, Gauge>::default();
        let problems = Gauge::default();
        let reload_failures = Counter::default();
        // 5 ms to ~20 s.
        let propagation = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        let unreachable = Gauge::default();
        registry.register(
            "propagation_seconds",
            "From a watch event reaching this replica to the snapshot that includes it being served (the oldest change of each swap)",
            propagation.clone(),
        );
        registry.register(
            "source_unreachable_seconds",
            "How long the API server has been unreachable (0 when its watches are healthy); the last known good snapshot is served meanwhile",
            unreachable.clone(),
        );
        registry.register(
            "requests",
            "Requests by endpoint, grant and outcome (ok or the OAuth error code)",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request latency by endpoint",
            latency.clone(),
        );
        registry.register(
            "client_auth",
            "Successful client authentications by method",
            auth.clone(),
        );
        let limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Token requests refused for a client's rateLimit or quota, by AuthPolicy",
            limited.clone(),
        );
        registry.register(
            "snapshot_generation",
            "Generation of the served snapshot",
            generation.clone(),
        );
        registry.register(
            "snapshot_loaded_timestamp_seconds",
            "When the served snapshot was built (unix time)",
            loaded_at.clone(),
        );
        registry.register(
            "snapshot_age_seconds",
            "Age of the served snapshot",
            age.clone(),
        );
        registry.register(
            "snapshot_objects",
            "Objects in the served snapshot by kind",
            objects.clone(),
        );
        registry.register(
            "snapshot_objects_with_problems",
            "Objects that are not fully served",
            problems.clone(),
        );
        registry.register(
            "reload_failures",
            "Reloads rejected (the last good snapshot kept serving)",
            reload_failures.clone(),
        );
        let lockouts = Counter::default();
        registry.register(
            "lockouts",
            "Authentications refused because their client or user (from that source) is told to wait after failed attempts, or a budget of failures ran out",
            lockouts.clone(),
        );
        let signing_since = Family::<AlgLabels, Gauge>::default();
        registry.register(
            "keys_signing_since_timestamp_seconds",
            "When the key signing each algorithm started signing (unix time): its age is time() minus this",
            signing_since.clone(),
        );
        let next_key_change = Gauge::default();
        registry.register(
            "keys_next_change_timestamp_seconds",
            "When a served key next starts signing or retires by the clock (unix time; 0: nothing scheduled)",
            next_key_change.clone(),
        );
        let audit = crate::audit::Counters::default();
        audit.register(&mut registry);
        Self {
            signing_since,
            next_key_change,
            lockouts,
            audit,
            registry,
            requests,
            latency,
            auth,
            limited,
            generation,
            loaded_at,
            age,
            objects,
            problems,
            reload_failures,
            propagation,
            unreachable,
        }
    }

    /// Records how long a watched change took to be served.
    pub fn observe_propagation(&self, took: Duration) {
        self.propagation.observe(took.as_secs_f64());
    }

    /// Sets how long the source has been unreachable, in seconds.
    pub fn set_source_unreachable(&self, secs: i64) {
        self.unreachable.set(secs);
    }

    /// Records one request.
    pub fn record_request(
        &self,
        endpoint: &'static str,
        grant: &'static str,
        err: Option<&OAuthError>,
        took: Duration,
    ) {
        let outcome = err.map_or("ok", OAuthError::code);
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                grant,
                outcome,
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(took.as_secs_f64());
    }

    /// Counts an authentication refused by the guessing budgets.
    pub fn record_lockout(&self) {
        self.lockouts.inc();
    }

    /// Records a successful client authentication.
    pub fn record_auth(&self, method: &'static str) {
        self.auth.get_or_create(&MethodLabels { method }).inc();
    }

    /// Counts a token request over its client's `limit` (`rate` or `quota`) under `policy`.
    pub fn record_limited(&self, policy: String, limit: &'static str) {
        self.limited
            .get_or_create(&LimitLabels { policy, limit })
            .inc();
    }

    /// Records a new snapshot.
    pub fn observe_snapshot(&self, generation: u64, loaded_at: jiff::Timestamp, s: &Snapshot) {
        self.generation.set(generation as i64);
        self.loaded_at.set(loaded_at.as_second());
        let c = s.counts();
        for (kind, n) in [
            ("ApiProxy", c.api_proxies),
            ("AuthPolicy", c.auth_policies),
            ("Credential", c.credentials),
            ("Role", c.roles),
            ("Secret", c.secrets),
            ("client", c.clients),
        ] {
            self.objects
                .get_or_create(&KindLabels { kind })
                .set(n as i64);
        }
        self.problems.set(s.report().with_problems().len() as i64);
    }

    /// Records the served key set's schedule at `now`.
    pub fn observe_keys(&self, keys: &tessera_keys::set::KeySet, now: jiff::Timestamp) {
        for alg in keys.algorithms(now) {
            if let Some(k) = keys.signer(alg, now) {
                self.signing_since
                    .get_or_create(&AlgLabels { alg: alg.as_str() })
                    .set(k.active_from.as_second());
            }
        }
        self.next_key_change
            .set(keys.next_change(now).map_or(0, |t| t.as_second()));
    }

    /// Records a rejected reload.
    pub fn record_reload_failure(&self) {
        self.reload_failures.inc();
    }

    /// The text exposition, with the snapshot age computed now.
    pub fn encode(&self, now: jiff::Timestamp) -> String {
        let loaded = self.loaded_at.get();
        if loaded > 0 {
            self.age.set((now.as_second() - loaded).max(0) as f64);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
