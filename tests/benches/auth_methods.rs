//! Client authentication methods side by side, in the cluster: client_secret_basic,
//! private_key_jwt (a fresh ES256 assertion per request), and ServiceAccount tokens verified
//! with the issuer's keys (JWKS) and with TokenReview, on the real control plane.
//!
//! `cargo bench -p tessera-e2e --bench auth_methods` (it builds the release binaries first).
//! `TESSERA_BENCH_SECS` (default 5) sets each run's length. Reports tokens per second and
//! **tokens per token-server CPU-second** (user+system from /proc/PID/stat) for 32 clients.

use base64::Engine as _;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tessera_e2e::*;

const ISSUER: &str = "http://tessera.test";
const TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CONNECTIONS: usize = 32;

fn b64(b: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")) as f64 / 100.0
}

struct Signer(aws_lc_rs::signature::EcdsaKeyPair);

impl Signer {
    fn jwk(&self) -> String {
        use aws_lc_rs::signature::KeyPair as _;
        let raw = self.0.public_key().as_ref();
        format!(
            "{{kty: EC, crv: P-256, kid: bench, x: {}, y: {}}}",
            b64(&raw[1..33]),
            b64(&raw[33..65])
        )
    }

    fn assertion(&self, n: u64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = json!({"iss": "keyed", "sub": "keyed", "aud": ISSUER, "exp": now + 60,
            "iat": now, "jti": format!("{}-{n}", std::process::id())});
        let input = format!(
            "{}.{}",
            b64(r#"{"alg":"ES256","kid":"bench","typ":"JWT"}"#),
            b64(claims.to_string())
        );
        let sig = self
            .0
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

#[derive(Clone)]
enum Method {
    Basic,
    Assertion(Arc<Signer>),
    ServiceAccount(String),
}

async fn request(http: &reqwest::Client, url: &str, m: &Method, n: u64) -> bool {
    let mut form = vec![("grant_type".to_owned(), "client_credentials".to_owned())];
    let mut req = http.post(url);
    match m {
        Method::Basic => {
            req = req.basic_auth("basic-app", Some("basic-app-bench-secret-0123456789"))
        }
        Method::Assertion(s) => {
            form.push(("client_assertion_type".into(), TYPE.into()));
            form.push(("client_assertion".into(), s.assertion(n)));
        }
        Method::ServiceAccount(t) => {
            form.push(("client_assertion_type".into(), TYPE.into()));
            form.push(("client_assertion".into(), t.clone()));
        }
    }
    req.form(&form)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // The binaries this runs, in release.
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "tessera-token-server",
            "-p",
            "tessera-operator",
        ])
        .status()
        .expect("cargo build");
    assert!(status.success());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let secs = std::env::var("TESSERA_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cluster = Cluster::connect("bench").await;
    let (app, sys) = (
        cluster.namespace("app").await,
        cluster.namespace("sys").await,
    );
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .expect("key");
    let signer = Arc::new(Signer(
        aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
        )
        .expect("pkcs8"),
    ));
    let manifests = format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {{name: mixed}}
spec: {{signingAlgorithm: ES256, clientAuthMethods: [client_secret_basic, private_key_jwt]}}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {{name: reviewed}}
spec: {{signingAlgorithm: ES256, clientAuthMethods: [private_key_jwt], serviceAccountVerification: TokenReview}}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {{name: ledger}}
spec: {{audience: "https://api.test/ledger", basePath: /ledger}}
---
apiVersion: v1
kind: Secret
metadata: {{name: basic-app}}
stringData: {{client_secret: basic-app-bench-secret-0123456789}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {{name: basic-app}}
spec: {{clientId: basic-app, secretRef: {{name: basic-app}}, policyRef: {{name: mixed}}, acl: [ledger]}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {{name: keyed}}
spec: {{clientId: keyed, policyRef: {{name: mixed}}, acl: [ledger], jwks: {{keys: [{jwk}]}}}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {{name: sa-jwks}}
spec: {{clientId: sa-jwks, policyRef: {{name: mixed}}, acl: [ledger], serviceAccount: {{name: sa-jwks}}}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {{name: sa-reviewed}}
spec: {{clientId: sa-reviewed, policyRef: {{name: reviewed}}, acl: [ledger], serviceAccount: {{name: sa-reviewed}}}}
"#,
        jwk = signer.jwk()
    );
    for r in tessera_crds::manifest::parse(&manifests, "bench.yaml")
        .expect("manifests")
        .resources
    {
        create(&cluster.admin, &app, r).await;
    }
    for sa in ["sa-jwks", "sa-reviewed"] {
        service_account(&cluster, &app, sa).await;
    }
    let sa_jwks = sa_token(&cluster, &app, "sa-jwks", ISSUER).await;
    let sa_reviewed = sa_token(&cluster, &app, "sa-reviewed", ISSUER).await;
    let kc = cluster.admin_kubeconfig();
    let _operator = spawn(
        &cluster,
        "operator",
        "operator",
        &kc,
        &[
            "run".to_owned(),
            format!("--namespaces={app}"),
            format!("--namespace={sys}"),
            "--leader-election=false".into(),
            format!("--admin-listen=127.0.0.1:{}", free_port()),
        ],
    );
    let replica = spawn_replica(&cluster, &kc, 0, &app, &sys, ISSUER);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    let url = replica.url("/oauth2/token");
    eventually(
        Duration::from_secs(60),
        "the secret client is served",
        || {
            let (http, url) = (http.clone(), url.clone());
            async move { request(&http, &url, &Method::Basic, 0).await }
        },
    )
    .await;
    let pid = replica.proc.0.id();
    println!(
        "auth-method benchmark: {CONNECTIONS} clients, {secs} s per method, token server on one API thread"
    );
    println!(
        "{:<32} {:>9} {:>14} {:>7}",
        "method", "tokens/s", "tok/srv-CPUs", "failed"
    );
    let seq = Arc::new(AtomicU64::new(0));
    for (name, m) in [
        ("client_secret_basic", Method::Basic),
        ("private_key_jwt (ES256)", Method::Assertion(signer.clone())),
        (
            "ServiceAccount token, JWKS",
            Method::ServiceAccount(sa_jwks.clone()),
        ),
        (
            "ServiceAccount token, TokenReview",
            Method::ServiceAccount(sa_reviewed.clone()),
        ),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let cpu0 = cpu_secs(pid);
        let started = Instant::now();
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let (http, url, m, stop, ok, failed, seq) = (
                    http.clone(),
                    url.clone(),
                    m.clone(),
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    seq.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = seq.fetch_add(1, Ordering::Relaxed);
                        if request(&http, &url, &m, n).await {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = w.await;
        }
        let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        let cpu = cpu_secs(pid) - cpu0;
        println!(
            "{name:<32} {:>9.0} {:>14.0} {failed:>7}",
            ok as f64 / started.elapsed().as_secs_f64(),
            ok as f64 / cpu.max(1e-9)
        );
    }
    cluster.cleanup().await;
}
