//! Shared-state benchmark: the release token server with `--state memory` and with `--state
//! redis://` (a real redis-server on loopback), side by side in one run, on one folder.
//!
//! `cargo bench -p tessera-token-server --bench state` (needs Debian's `redis-server`).
//! `TESSERA_BENCH_SECS` (default 6) sets each run's length, `TESSERA_BENCH_ROUNDS` (default 3)
//! the rounds (medians are reported); `TESSERA_BENCH_ONLY=audit` runs only the audit on/off
//! comparison.
//!
//! The token server runs one API thread pinned to CPU 0; the load generator and redis-server
//! share CPU 1 (with `taskset`, when there are two CPUs or more).
//!
//! Three scenarios, each driven by 32 concurrent clients on loopback (a small tokio load generator:
//! a refresh chain cannot be replayed by a generic one, every exchange returns the next token):
//! client_credentials (JWT, ES256) with client_secret_basic, the same with private_key_jwt (the
//! load generator signs a fresh ES256 assertion per request; the server verifies it and spends
//! its jti), and refresh_token with rotation. For each it reports tokens
//! per second, **tokens per token-server CPU-second** (user+system from /proc/PID/stat, which the
//! shared machine does not blur) and per CPU-second of token server and redis-server together,
//! and the **Redis round trips per request** (the server's own `tessera_state_round_trips_total`,
//! cross-checked against Redis's INFO commandstats). The ratios redis/memory are the figures the
//! issue set targets for: client_credentials at ≥ 80% of memory state, at most one round trip.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 32;
const BIN: &str = env!("CARGO_BIN_EXE_token-server");

const MANIFESTS: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: refreshing}
spec:
  signingAlgorithm: ES256
  grantTypes: [client_credentials, refresh_token]
  refresh: {enabled: true, ttl: 12h, rotate: true}
  clientAuthMethods: [client_secret_basic, private_key_jwt]
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: reports}
spec: {audience: "https://api.example.com/reports", basePath: /reports}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: runner}
spec: {clientId: runner, secretRef: {name: runner-secret}, policyRef: {name: refreshing}, acl: [reports], jwks: {keys: [JWK]}}
---
apiVersion: v1
kind: Secret
metadata: {name: runner-secret}
stringData: {client_secret: runner-bench-secret-0123456789abcdef}
"#;
const SECRET: &str = "runner-bench-secret-0123456789abcdef";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15: the 12th and 13th after the comm.
    let ticks = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on.
    ticks as f64 / 100.0
}

fn folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-state-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("resources.yaml"), MANIFESTS.replace("JWK", &jwk())).expect("write");
    let keys = Command::new(BIN)
        .arg("generate-keys")
        .output()
        .expect("generate-keys");
    std::fs::write(dir.join("keys.yaml"), keys.stdout).expect("keys");
    dir
}

/// With two CPUs or more, the token server gets CPU 0 to itself and the load generator and
/// redis-server share CPU 1: otherwise the scheduler's churn between three busy processes on
/// two cores lands in whichever process it switches to, and blurs the per-request cost.
fn pinned(program: &str, cpu: &str) -> Command {
    if CPUS.get().is_some_and(|n| *n >= 2)
        && Command::new("taskset")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        let mut c = Command::new("taskset");
        c.args(["-c", cpu, program]);
        c
    } else {
        Command::new(program)
    }
}

/// The CPUs before the bench pinned itself.
static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn pin_self(cpu: &str) {
    if CPUS.get().is_none_or(|n| *n < 2) {
        return;
    }
    let _ = Command::new("taskset")
        .args(["-pc", cpu, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
}

async fn redis_server() -> (Proc, u16) {
    let port = free_port();
    let child = pinned("redis-server", "1")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let p = Proc(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (p, port);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server never listened");
}

async fn redis_info(port: u16, section: &str) -> String {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut c)
        .await
        .expect("INFO")
}

/// Calls of evalsha/eval/set/mget from INFO commandstats: the commands a token server sends, and
/// the SETs its scripts run inside Redis (counted there too, though no round trip carries them).
async fn redis_calls(port: u16) -> u64 {
    redis_info(port, "commandstats")
        .await
        .lines()
        .filter(|l| {
            [
                "cmdstat_evalsha:",
                "cmdstat_eval:",
                "cmdstat_mget:",
                "cmdstat_set:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .filter_map(|l| {
            l.split(',')
                .next()
                .and_then(|c| c.rsplit_once("calls="))
                .and_then(|(_, n)| n.parse::<u64>().ok())
        })
        .sum()
}

async fn redis_pid(port: u16) -> u32 {
    redis_info(port, "server")
        .await
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("process_id")
}

struct Server {
    proc: Proc,
    api: String,
    admin: String,
}

async fn start(dir: &Path, state: &str) -> Server {
    start_with(dir, state, "off").await
}

/// A server with `--audit-log=audit` (`off`, or a file).
async fn start_with(dir: &Path, state: &str, audit: &str) -> Server {
    let (api, admin) = (free_port(), free_port());
    let child = pinned(BIN, "0")
        .args(["--source", "dir", "--dir"])
        .arg(dir)
        .arg(format!("--listen=127.0.0.1:{api}"))
        .arg(format!("--admin-listen=127.0.0.1:{admin}"))
        .arg(format!("--state={state}"))
        .arg(format!("--audit-log={audit}"))
        .args([
            "--log=warn",
            "--free-failed-auth=1000000",
            "--api-threads=1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("token-server");
    let s = Server {
        proc: Proc(child),
        api: format!("http://127.0.0.1:{api}"),
        admin: format!("http://127.0.0.1:{admin}"),
    };
    for _ in 0..400 {
        if reqwest::get(format!("{}/readyz", s.admin))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the token server never got ready");
}

async fn round_trips(s: &Server) -> u64 {
    let text = reqwest::get(format!("{}/metrics", s.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("tessera_state_round_trips_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    /// client_credentials, client_secret_basic.
    ClientCredentials,
    /// refresh_token with rotation.
    Refresh,
    /// client_credentials, private_key_jwt: a fresh ES256 assertion per request.
    PrivateKeyJwt,
}

/// The client's signing key (P-256, PKCS#8), made once per run.
static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

fn key() -> &'static [u8] {
    KEY.get_or_init(|| {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("key")
            .serialize_der()
    })
}

fn b64(b: impl AsRef<[u8]>) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn jwk() -> String {
    let kp = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key(),
    )
    .expect("pkcs8");
    use aws_lc_rs::signature::KeyPair as _;
    let raw = kp.public_key().as_ref().to_vec();
    format!(
        "{{kty: EC, crv: P-256, kid: bench, x: {}, y: {}}}",
        b64(&raw[1..33]),
        b64(&raw[33..65])
    )
}

/// A fresh assertion (unique jti) for the runner, for the server's default issuer, signed by
/// the load generator.
fn assertion(n: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({"iss": "runner", "sub": "runner", "aud": "http://localhost:8080",
        "exp": now + 60, "iat": now, "jti": format!("{}-{n}", std::process::id())});
    let input = format!(
        "{}.{}",
        b64(r#"{"alg":"ES256","kid":"bench","typ":"JWT"}"#),
        b64(claims.to_string())
    );
    let kp = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key(),
    )
    .expect("pkcs8");
    let sig = kp
        .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
        .expect("sign");
    format!("{input}.{}", b64(sig.as_ref()))
}

static SEQ: AtomicU64 = AtomicU64::new(0);

async fn token_by_assertion(http: &reqwest::Client, api: &str) -> Option<Value> {
    let a = assertion(SEQ.fetch_add(1, Ordering::Relaxed));
    let r = http
        .post(format!("{api}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &a),
        ])
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

async fn token(http: &reqwest::Client, api: &str, form: &[(&str, &str)]) -> Option<Value> {
    let r = http
        .post(format!("{api}/oauth2/token"))
        .basic_auth("runner", Some(SECRET))
        .form(form)
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

struct Measured {
    ok: u64,
    failed: u64,
    secs: f64,
    server_cpu: f64,
    redis_cpu: f64,
    trips: u64,
    redis_calls: u64,
}

async fn drive(s: &Server, scenario: Scenario, secs: u64, redis: Option<u16>) -> Measured {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    // Each refresh worker starts its own chain (not measured).
    let mut chains = Vec::new();
    for _ in 0..CONNECTIONS {
        let rt = if scenario == Scenario::Refresh {
            token(&http, &s.api, &[("grant_type", "client_credentials")])
                .await
                .and_then(|v| v["refresh_token"].as_str().map(String::from))
        } else {
            None
        };
        chains.push(rt);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (cpu0, trips0) = (cpu_secs(s.proc.0.id()), round_trips(s).await);
    let (rcpu0, calls0) = match redis {
        Some(p) => (cpu_secs(redis_pid(p).await), redis_calls(p).await),
        None => (0.0, 0),
    };
    let started = Instant::now();
    let workers: Vec<_> = chains
        .into_iter()
        .map(|mut rt| {
            let (http, api, stop, ok, failed) = (
                http.clone(),
                s.api.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = match (&scenario, &rt) {
                        (Scenario::Refresh, Some(t)) => {
                            token(
                                &http,
                                &api,
                                &[("grant_type", "refresh_token"), ("refresh_token", t)],
                            )
                            .await
                        }
                        (Scenario::PrivateKeyJwt, _) => token_by_assertion(&http, &api).await,
                        _ => token(&http, &api, &[("grant_type", "client_credentials")]).await,
                    };
                    match answer {
                        Some(v) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if scenario == Scenario::Refresh {
                                rt = v["refresh_token"].as_str().map(String::from);
                            }
                        }
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
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
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = cpu_secs(s.proc.0.id()) - cpu0;
    let trips = round_trips(s).await - trips0;
    let (redis_cpu, redis_calls) = match redis {
        Some(p) => (
            cpu_secs(redis_pid(p).await) - rcpu0,
            // Minus the INFO calls above are not counted: INFO is not in the filter.
            redis_calls(p).await - calls0,
        ),
        None => (0.0, 0),
    };
    Measured {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        secs: elapsed,
        server_cpu,
        redis_cpu,
        trips,
        redis_calls,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = CPUS.set(cpus);
    pin_self("1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let secs = env_or("TESSERA_BENCH_SECS", 6);
        let rounds = env_or("TESSERA_BENCH_ROUNDS", 3).max(1) as usize;
        let dir = folder();
        let (_redis, port) = redis_server().await;
        let url = format!("redis://127.0.0.1:{port}/0");
        println!(
            "shared-state benchmark: {CONNECTIONS} clients, {secs} s per run, {rounds} rounds, {cpus} CPUs{}",
            if cpus >= 2 { " (token server on CPU 0; load and redis-server on CPU 1)" } else { "" }
        );
        println!(
            "{:<20} {:<7} {:>9} {:>12} {:>16} {:>14} {:>8}",
            "scenario", "state", "tokens/s", "tok/srv-CPUs", "tok/(srv+redis)s", "trips/request", "failed"
        );
        // TESSERA_BENCH_ONLY=audit runs the audit comparison alone.
        let only_audit = std::env::var("TESSERA_BENCH_ONLY").is_ok_and(|v| v == "audit");
        let scenarios: &[Scenario] = if only_audit {
            &[]
        } else {
            &[
                Scenario::ClientCredentials,
                Scenario::PrivateKeyJwt,
                Scenario::Refresh,
            ]
        };
        for &scenario in scenarios {
            let name = match scenario {
                Scenario::ClientCredentials => "client_credentials",
                Scenario::PrivateKeyJwt => "private_key_jwt",
                Scenario::Refresh => "refresh_token",
            };
            let mut per_cpu = [Vec::new(), Vec::new()];
            for _ in 0..rounds {
                // Side by side in each round: memory, then redis, on fresh servers.
                for (k, state) in ["memory", url.as_str()].into_iter().enumerate() {
                    let s = start(&dir, state).await;
                    let redis = (k == 1).then_some(port);
                    let m = drive(&s, scenario, secs, redis).await;
                    let tps = m.ok as f64 / m.secs;
                    let pc = m.ok as f64 / m.server_cpu.max(1e-9);
                    let both = m.ok as f64 / (m.server_cpu + m.redis_cpu).max(1e-9);
                    let trips = m.trips as f64 / m.ok.max(1) as f64;
                    println!(
                        "{name:<20} {:<7} {tps:>9.0} {pc:>12.0} {both:>16.0} {trips:>14.3} {:>8}",
                        if k == 0 { "memory" } else { "redis" },
                        m.failed
                    );
                    if k == 1 {
                        println!(
                            "{:<20} {:<7} redis ran {:.3} commands per request (INFO commandstats: evalsha/eval/set/mget, the SETs inside scripts included)",
                            "",
                            "",
                            m.redis_calls as f64 / m.ok.max(1) as f64
                        );
                    }
                    per_cpu[k].push(pc);
                }
            }
            let (mem, red) = (median(per_cpu[0].clone()), median(per_cpu[1].clone()));
            println!(
                "{name}: tokens per server CPU-second, median: memory {mem:.0}, redis {red:.0}: redis/memory = {:.2}",
                red / mem
            );
        }
        // The audit trail's cost: client_credentials with memory state, audit off and audit
        // to a file (one token.issued line per request), side by side in each round.
        let audit_file = dir.join("audit.jsonl");
        let mut per_cpu = [Vec::new(), Vec::new()];
        let mut lines = 0;
        for _ in 0..rounds {
            for (k, audit) in ["off", audit_file.to_str().expect("utf-8 path")]
                .into_iter()
                .enumerate()
            {
                let _ = std::fs::remove_file(&audit_file);
                let s = start_with(&dir, "memory", audit).await;
                let m = drive(&s, Scenario::ClientCredentials, secs, None).await;
                drop(s);
                let pc = m.ok as f64 / m.server_cpu.max(1e-9);
                if k == 1 {
                    lines = std::fs::read_to_string(&audit_file)
                        .map(|t| t.lines().count())
                        .unwrap_or(0);
                }
                println!(
                    "{:<20} {:<7} {:>9.0} {pc:>12.0} {:>16} {:>14} {:>8}",
                    "cc, audit",
                    if k == 0 { "off" } else { "file" },
                    m.ok as f64 / m.secs,
                    "",
                    "",
                    m.failed
                );
                per_cpu[k].push(pc);
            }
        }
        let (off, on) = (median(per_cpu[0].clone()), median(per_cpu[1].clone()));
        println!(
            "audit: tokens per server CPU-second, median: off {off:.0}, to a file {on:.0}: on/off = {:.2} ({lines} lines written in the last run)",
            on / off
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
