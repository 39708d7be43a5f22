//! Reconciling 10,000 Credentials from scratch against the in-process fake API server: wall
//! time, API requests per Credential, and a steady-state pass that must make zero writes.
//!
//! `cargo bench -p tessera-operator --bench reconcile` (env `TESSERA_BENCH_CREDENTIALS`,
//! `TESSERA_BENCH_ROUNDS`). Loopback HTTP and JSON dominate; the figures are for comparing
//! changes on one machine, reported as medians of the rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_crds::{AuthPolicy, Credential};
use tessera_fake_apiserver::FakeApiServer;
use tessera_operator::metrics::Metrics;
use tessera_operator::plan::Settings;
use tessera_operator::run::{Config, Operator};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn round(n: usize) -> (f64, f64, f64, u64) {
    let fake = FakeApiServer::start().await.expect("fake");
    let client = fake.client().expect("client");
    let pp = kube::api::PostParams::default();
    let policy: AuthPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthPolicy", "metadata": {"name": "p", "namespace": "bench"},
        "spec": {"management": "ACL", "grantTypes": ["client_credentials"]}
    })).expect("policy");
    kube::Api::<AuthPolicy>::namespaced(client.clone(), "bench")
        .create(&pp, &policy)
        .await
        .expect("create");
    let creds = kube::Api::<Credential>::namespaced(client.clone(), "bench");
    for i in 0..n {
        let c: Credential = serde_json::from_value(serde_json::json!({
            "apiVersion": "tessera.dev/v1alpha1", "kind": "Credential", "metadata": {"name": format!("c{i}"), "namespace": "bench"},
            "spec": {"policyRef": {"name": "p"}}
        })).expect("cred");
        creds.create(&pp, &c).await.expect("create");
    }
    let cfg = Config {
        namespaces: vec![],
        keys_namespace: "tessera-system".into(),
        keys_secret: "tessera-keys".into(),
        key_rotation: None,
        key_prepublish: Duration::from_secs(1800),
        skew: Duration::from_secs(300),
        settings: Settings {
            token_endpoint: "http://t/oauth2/token".into(),
        },
        lease: None,
        concurrency: 16,
        debounce: Duration::from_millis(100),
    };
    let op = Operator::start(client.clone(), cfg, Arc::new(Metrics::default()));
    op.wait_synced().await;
    fake.reset_requests();
    let start = Instant::now();
    let r = op.pass().await;
    let scratch = start.elapsed().as_secs_f64();
    assert_eq!(r.errors, 0, "{r:?}");
    let reqs: u64 = fake.requests().values().sum();
    fake.reset_requests();
    let start = Instant::now();
    let steady = op.pass().await;
    let steady_secs = start.elapsed().as_secs_f64();
    let steady_writes: u64 = fake
        .requests()
        .iter()
        .filter(|(v, _)| v.as_str() != "list" && v.as_str() != "watch" && v.as_str() != "get")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(steady.writes, 0, "steady state wrote: {steady:?}");
    (scratch, reqs as f64 / n as f64, steady_secs, steady_writes)
}

fn main() {
    let n = env_or("TESSERA_BENCH_CREDENTIALS", 10_000);
    let rounds = env_or("TESSERA_BENCH_ROUNDS", 3);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut scratch = Vec::new();
    let mut per = Vec::new();
    let mut steady = Vec::new();
    for i in 0..rounds {
        let (s, p, st, w) = rt.block_on(round(n));
        println!(
            "round {i}: from scratch {s:.2} s, {p:.2} API requests per Credential; steady-state pass {:.0} ms, {w} writes",
            st * 1000.0
        );
        scratch.push(s);
        per.push(p);
        steady.push(st);
    }
    println!(
        "reconcile {n} Credentials (median of {rounds}): from scratch {:.2} s ({:.0} Credentials/s), {:.2} requests per Credential; steady-state pass {:.0} ms with 0 writes",
        median(scratch.clone()),
        n as f64 / median(scratch),
        median(per),
        median(steady) * 1000.0
    );
}
