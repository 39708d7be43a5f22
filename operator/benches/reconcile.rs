//! Reconciling 10,000 Credentials from scratch against the real control plane (etcd and
//! kube-apiserver on loopback, see tests/control-plane): wall time, API requests per Credential
//! as the API server's audit log records them, and a steady-state pass that must make zero
//! writes.
//!
//! `cargo bench -p tessera-operator --bench reconcile` (env `TESSERA_BENCH_CREDENTIALS`,
//! `TESSERA_BENCH_ROUNDS`). Each round uses a fresh namespace. The figures are for comparing
//! changes on one machine, reported as medians of the rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_control_plane::ControlPlane;
use tessera_crds::{AuthPolicy, Credential};
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

const OPERATOR: &str = "tessera-operator-bench";

async fn round(cp: &ControlPlane, n: usize) -> (f64, f64, f64, u64) {
    use futures::StreamExt as _;
    let client = cp.client().await;
    let ns = cp.namespace(&client, "bench").await;
    let pp = kube::api::PostParams::default();
    let policy: AuthPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthPolicy", "metadata": {"name": "p"},
        "spec": {"management": "ACL", "grantTypes": ["client_credentials"]}
    }))
    .expect("policy");
    kube::Api::<AuthPolicy>::namespaced(client.clone(), &ns)
        .create(&pp, &policy)
        .await
        .expect("create");
    let creds = kube::Api::<Credential>::namespaced(client.clone(), &ns);
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let (creds, pp) = (creds.clone(), pp.clone());
            async move {
                let c: Credential = serde_json::from_value(serde_json::json!({
                    "apiVersion": "tessera.dev/v1alpha1", "kind": "Credential", "metadata": {"name": format!("c{i}")},
                    "spec": {"policyRef": {"name": "p"}}
                })).expect("cred");
                creds.create(&pp, &c).await.expect("create");
            }
        })
        .await;
    let cfg = Config {
        namespaces: vec![ns.clone()],
        keys_namespace: ns.clone(),
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
    let op_client = cp.client_as(OPERATOR, &["system:masters"]).await;
    let op = Operator::start(op_client, cfg, Arc::new(Metrics::default()));
    op.wait_synced().await;
    // The operator's requests in this round's namespace, as the API server's audit log has them
    // (watches excluded: they are long-running, not per Credential).
    let requests = |mark: u64, writes_only: bool| {
        std::thread::sleep(Duration::from_millis(500));
        cp.audit_since(mark)
            .into_iter()
            .filter(|e| e.user == OPERATOR && e.namespace == ns && e.verb != "watch")
            .filter(|e| !writes_only || e.is_write())
            .count() as u64
    };
    let mark = cp.audit_mark();
    let start = Instant::now();
    let r = op.pass().await;
    let scratch = start.elapsed().as_secs_f64();
    assert_eq!(r.errors, 0, "{r:?}");
    let reqs = requests(mark, false);
    let mark = cp.audit_mark();
    let start = Instant::now();
    let steady = op.pass().await;
    let steady_secs = start.elapsed().as_secs_f64();
    let steady_writes = requests(mark, true);
    assert_eq!(steady.writes, 0, "steady state wrote: {steady:?}");
    assert_eq!(
        steady_writes, 0,
        "the audit log shows writes in steady state"
    );
    (scratch, reqs as f64 / n as f64, steady_secs, steady_writes)
}

fn main() {
    let n = env_or("TESSERA_BENCH_CREDENTIALS", 10_000);
    let rounds = env_or("TESSERA_BENCH_ROUNDS", 3);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cp = ControlPlane::shared();
    let mut scratch = Vec::new();
    let mut per = Vec::new();
    let mut steady = Vec::new();
    for i in 0..rounds {
        let (s, p, st, w) = rt.block_on(round(cp, n));
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
