//! Load benchmark: the release token server over loopback, driven by `oha`.
//!
//! `cargo bench -p tessera-token-server --bench load` (needs `oha`: `cargo install oha`).
//! Set `TESSERA_BENCH_SECS` (default 8) for the length of each run, `TESSERA_BENCH_SIZES`
//! (default `10,100000`) for the numbers of Credentials, `TESSERA_BENCH_ROUNDS` (default 3), and
//! `TESSERA_BENCH_MTLS=0` to skip the mTLS runs (reused connections and a handshake per request).
//!
//! For a folder with 10 Credentials and one with 100,000, it starts `token-server --source dir`,
//! then for each scenario (client_credentials with an ES256, EdDSA and RS256 JWT and an opaque
//! token; introspection; JWKS) runs oha at 32 connections and reports req/s, p50/p99 and
//! **tokens per server CPU-second**: requests divided by the server's user+system CPU time over the
//! run (from /proc/PID/stat). The machine is shared with the load generator, so req/s moves with
//! the noise; CPU-seconds per request does not. It also reports p99 at half the peak rate, the
//! server's RSS, and how long a reload of the folder takes.

use base64::Engine as _;
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tessera_token_server::token::keys::KeySet;

const CONNECTIONS: u32 = 32;

fn secs() -> u64 {
    std::env::var("TESSERA_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

fn oha() -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = [
        PathBuf::from(format!("{home}/.cargo/bin/oha")),
        PathBuf::from("/usr/local/bin/oha"),
        PathBuf::from("/usr/bin/oha"),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

fn secret_of(id: &str) -> String {
    format!("{id}-secret-0123456789abcdef0123456789abcdef")
}

/// A folder: policies per algorithm and token type, 10 ApiProxies and Roles, and `n` Credentials,
/// each with its own Secret.
fn write_folder(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).expect("dir");
    let keys = KeySet::generate_file(jiff::Timestamp::now()).expect("keys");
    let keys_json = serde_json::to_string(&keys).expect("json");
    std::fs::write(
        dir.join("keys.yaml"),
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: tessera-keys}}\nstringData:\n  keyset.json: '{keys_json}'\n"),
    )
    .expect("keys");
    let mut base = String::new();
    for (name, spec) in [
        ("es", "{signingAlgorithm: ES256}"),
        ("ed", "{signingAlgorithm: EdDSA}"),
        ("rs", "{signingAlgorithm: RS256}"),
        ("opaque", "{tokenType: OAuth2}"),
    ] {
        base += &format!(
            "---\napiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        );
    }
    for p in 0..10 {
        base += &format!(
            "---\napiVersion: tessera.dev/v1alpha1\nkind: ApiProxy\nmetadata: {{name: p{p}}}\nspec: {{basePath: /p{p}, audience: 'https://api.bench/p{p}'}}\n"
        );
        base += &format!(
            "---\napiVersion: tessera.dev/v1alpha1\nkind: Role\nmetadata: {{name: r{p}}}\nspec: {{scope: 'scope:{p}', apiProxies: [p{p}]}}\n"
        );
    }
    for (id, policy) in [
        ("bench-es", "es"),
        ("bench-ed", "ed"),
        ("bench-rs", "rs"),
        ("bench-opaque", "opaque"),
        ("bench-gateway", "opaque"),
    ] {
        base += &format!(
            "---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: {id}}}\nspec: {{clientId: {id}, secretRef: {{name: {id}}}, policyRef: {{name: {policy}}}, acl: [p0], introspects: [p0], roles: [r1], claims: {{tenant: bench}}}}\n"
        );
        base += &format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {id}}}\nstringData: {{client_secret: {}}}\n",
            secret_of(id)
        );
    }
    std::fs::write(dir.join("base.yaml"), base).expect("base");
    let fillers = n.saturating_sub(5);
    let per_file = 2000;
    for chunk in 0..fillers.div_ceil(per_file) {
        let mut text = String::with_capacity(per_file * 400);
        for i in chunk * per_file..((chunk + 1) * per_file).min(fillers) {
            let policy = ["es", "ed", "rs", "opaque"][i % 4];
            text += &format!(
                "---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: c{i}}}\nspec: {{clientId: client-{i}, secretRef: {{name: c{i}}}, policyRef: {{name: {policy}}}, acl: [p{}], roles: [r{}]}}\n",
                i % 10,
                (i / 10) % 10
            );
            text += &format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: c{i}}}\nstringData: {{client_secret: s3cret-{i:058}}}\n"
            );
        }
        std::fs::write(dir.join(format!("credentials-{chunk:03}.yaml")), text).expect("chunk");
    }
}

struct Server {
    child: Child,
    api: String,
    admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "-f", "--max-time", "5", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn start(dir: &Path) -> Server {
    start_with(dir, &[], "http")
}

fn start_with(dir: &Path, extra: &[String], scheme: &str) -> Server {
    let (api, admin) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_token-server"))
        .args(["--source", "dir", "--dir"])
        .arg(dir)
        .args(extra)
        .args([
            "--listen",
            &format!("127.0.0.1:{api}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .args(["--log", "warn", "--max-failed-auth-per-address", "1000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start token-server");
    // A TLS server is addressed by the name its certificate carries.
    let host = if scheme == "https" {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let s = Server {
        child,
        api: format!("{scheme}://{host}:{api}"),
        admin: format!("http://127.0.0.1:{admin}"),
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while get(&format!("{}/readyz", s.admin)).is_none() {
        assert!(Instant::now() < deadline, "token-server not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of /proc/PID/stat: 12th and 13th after the comm.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Scenario {
    name: &'static str,
    url: String,
    method: &'static str,
    headers: Vec<String>,
    body: Option<String>,
}

fn basic(id: &str) -> String {
    let creds = format!("{id}:{}", secret_of(id));
    format!(
        "authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(creds)
    )
}

fn token_scenario(name: &'static str, api: &str, id: &str) -> Scenario {
    Scenario {
        name,
        url: format!("{api}/oauth2/token"),
        method: "POST",
        headers: vec![
            basic(id),
            "content-type: application/x-www-form-urlencoded".into(),
        ],
        body: Some("grant_type=client_credentials".into()),
    }
}

struct Outcome {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    per_cpu_sec: f64,
    ok: u64,
    total: u64,
}

fn run(oha: &Path, s: &Scenario, pid: u32, rate: Option<f64>, secs: u64) -> Outcome {
    run_with(oha, s, pid, rate, secs, &[])
}

fn run_with(
    oha: &Path,
    s: &Scenario,
    pid: u32,
    rate: Option<f64>,
    secs: u64,
    extra: &[String],
) -> Outcome {
    let mut cmd = Command::new(oha);
    cmd.args(extra);
    cmd.args([
        "-z",
        &format!("{secs}s"),
        "-c",
        &CONNECTIONS.to_string(),
        "--no-tui",
        "--output-format",
        "json",
        "-m",
        s.method,
    ]);
    for h in &s.headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = &s.body {
        cmd.args(["-d", b]);
    }
    if let Some(q) = rate {
        cmd.args(["-q", &format!("{q:.0}")]);
    }
    cmd.arg(&s.url);
    let before = cpu_ticks(pid);
    let out = cmd.output().expect("run oha");
    let cpu = (cpu_ticks(pid) - before) as f64 / clk_tck();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("oha output: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let codes = v["statusCodeDistribution"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let ok = codes.get("200").and_then(Value::as_u64).unwrap_or(0);
    let total: u64 = codes.values().filter_map(Value::as_u64).sum();
    Outcome {
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: v["latencyPercentiles"]["p50"].as_f64().unwrap_or(0.0) * 1000.0,
        p99_ms: v["latencyPercentiles"]["p99"].as_f64().unwrap_or(0.0) * 1000.0,
        per_cpu_sec: if cpu > 0.0 { ok as f64 / cpu } else { 0.0 },
        ok,
        total,
    }
}

fn reload_time(s: &Server, dir: &Path) -> Duration {
    let generation = || -> u64 {
        get(&format!("{}/readyz", s.admin))
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| v["generation"].as_u64())
            .unwrap_or(0)
    };
    let g0 = generation();
    let start = Instant::now();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("base.yaml"))
        .expect("open");
    writeln!(f, "# touched").expect("write");
    drop(f);
    while generation() == g0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "reload never happened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// The mTLS setup in `dir`: a CA, a server certificate for localhost, a client certificate for
/// `bench-mtls` and a Credential bound to its subject. Returns the TLS flags for the server and
/// the certificate flags for oha.
fn write_mtls(dir: &Path) -> (Vec<String>, Vec<String>) {
    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let certs = dir.join("..certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bench CA");
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(names).expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        let k = KeyPair::generate().expect("key");
        let c = p.signed_by(&k, &issuer).expect("signed");
        (c.pem(), k.serialize_pem())
    };
    let (srv, srv_key) = leaf(vec!["localhost".into()], "localhost");
    let (cli, cli_key) = leaf(vec![], "bench-mtls");
    for (name, text) in [
        ("ca.pem", ca_cert.pem()),
        ("tls.crt", srv),
        ("tls.key", srv_key),
        ("client.crt", cli),
        ("client.key", cli_key),
    ] {
        std::fs::write(certs.join(name), text).expect("write");
    }
    std::fs::write(
        dir.join("mtls.yaml"),
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {name: mtls}\nspec: {signingAlgorithm: ES256, clientAuthMethods: [tls_client_auth]}\n---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: bench-mtls}\nspec: {clientId: bench-mtls, policyRef: {name: mtls}, acl: [p0], mtls: {subjectDn: CN=bench-mtls}}\n",
    )
    .expect("manifest");
    let p = |f: &str| certs.join(f).display().to_string();
    let server = vec![
        "--tls-cert".into(),
        p("tls.crt"),
        "--tls-key".into(),
        p("tls.key"),
        "--tls-client-ca".into(),
        p("ca.pem"),
    ];
    let client = vec![
        "--cacert".into(),
        p("ca.pem"),
        "--cert".into(),
        p("client.crt"),
        "--key".into(),
        p("client.key"),
    ];
    (server, client)
}

/// client_credentials over mTLS (ES256), with connections reused and with a new TLS handshake
/// per request.
fn bench_mtls(oha: &Path, root: &Path, secs: u64, rounds: usize) {
    let dir = root.join("mtls");
    write_folder(&dir, 10);
    let (server_flags, client_flags) = write_mtls(&dir);
    let server = start_with(&dir, &server_flags, "https");
    let scenario = Scenario {
        name: "mTLS client_credentials ES256 JWT",
        url: format!("{}/oauth2/token", server.api),
        method: "POST",
        headers: vec!["content-type: application/x-www-form-urlencoded".into()],
        body: Some("grant_type=client_credentials&client_id=bench-mtls".into()),
    };
    let mut no_keepalive = client_flags.clone();
    no_keepalive.push("--disable-keepalive".into());
    println!();
    println!(
        "| mTLS | connections | req/s | p50 ms | p99 ms | tokens per server CPU-s | non-200 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (label, flags) in [
        ("reused", &client_flags),
        ("new handshake per request", &no_keepalive),
    ] {
        let runs: Vec<Outcome> = (0..rounds)
            .map(|_| run_with(oha, &scenario, server.child.id(), None, secs, flags))
            .collect();
        let bad: u64 = runs.iter().map(|o| o.total - o.ok).sum();
        println!(
            "| {} | {label} | {:.0} | {:.3} | {:.3} | {:.0} | {bad} |",
            scenario.name,
            median(runs.iter().map(|o| o.rps).collect()),
            median(runs.iter().map(|o| o.p50_ms).collect()),
            median(runs.iter().map(|o| o.p99_ms).collect()),
            median(runs.iter().map(|o| o.per_cpu_sec).collect())
        );
    }
}

/// Per-scenario results of one server across rounds.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn scenarios(api: &str, opaque_token: &str) -> Vec<Scenario> {
    vec![
        token_scenario("client_credentials ES256 JWT", api, "bench-es"),
        token_scenario("client_credentials EdDSA JWT", api, "bench-ed"),
        token_scenario("client_credentials RS256 JWT", api, "bench-rs"),
        token_scenario("client_credentials opaque", api, "bench-opaque"),
        Scenario {
            name: "introspection (opaque)",
            url: format!("{api}/oauth2/introspect"),
            method: "POST",
            headers: vec![
                basic("bench-gateway"),
                "content-type: application/x-www-form-urlencoded".into(),
            ],
            body: Some(format!("token={opaque_token}")),
        },
        Scenario {
            name: "JWKS",
            url: format!("{api}/.well-known/jwks.json"),
            method: "GET",
            headers: vec![],
            body: None,
        },
    ]
}

fn opaque_token(api: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            &basic("bench-opaque"),
            "-d",
            "grant_type=client_credentials",
        ])
        .arg(format!("{api}/oauth2/token"))
        .output()
        .expect("curl");
    let body: Value = serde_json::from_slice(&out.stdout).expect("token json");
    body["access_token"].as_str().expect("token").to_owned()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` only checks that this builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(oha) = oha() else {
        eprintln!(
            "the load benchmark needs oha: `cargo install oha` (crates.io), then run it again"
        );
        std::process::exit(1);
    };
    let secs = secs();
    let rounds: usize = std::env::var("TESSERA_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let sizes: Vec<usize> = std::env::var("TESSERA_BENCH_SIZES")
        .unwrap_or_else(|_| "10,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let root = std::env::temp_dir().join(format!("tessera-bench-{}", std::process::id()));
    println!("load average before: {}", loadavg());
    // Every server runs at once and the rounds alternate between them, so drift in the machine's
    // load hits all sizes alike; figures are medians over the rounds.
    let mut servers = Vec::new();
    for &n in &sizes {
        let dir = root.join(format!("n{n}"));
        write_folder(&dir, n);
        let t = Instant::now();
        let server = start(&dir);
        println!("credentials={n}: startup to ready {:.2?}", t.elapsed());
        let token = opaque_token(&server.api);
        servers.push((n, dir, server, token));
    }
    for (_, _, server, _) in &servers {
        run(
            &oha,
            &scenarios(&server.api, "x")[0],
            server.child.id(),
            None,
            2,
        ); // warm-up
    }
    println!();
    println!(
        "| credentials | scenario | req/s | p50 ms | p99 ms | tokens per server CPU-s | non-200 |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let names: Vec<&'static str> = scenarios("", "").iter().map(|s| s.name).collect();
    let mut per_cpu: Vec<Vec<f64>> = vec![Vec::new(); servers.len() * names.len()];
    for (si, name) in names.iter().enumerate() {
        let mut rows: Vec<Vec<Outcome>> = (0..servers.len()).map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (k, (_, _, server, token)) in servers.iter().enumerate() {
                let sc = &scenarios(&server.api, token)[si];
                rows[k].push(run(&oha, sc, server.child.id(), None, secs));
            }
        }
        for (k, (n, _, server, token)) in servers.iter().enumerate() {
            let r = &rows[k];
            let cpu: Vec<f64> = r.iter().map(|o| o.per_cpu_sec).collect();
            per_cpu[k * names.len() + si] = cpu.clone();
            let bad: u64 = r.iter().map(|o| o.total - o.ok).sum();
            println!(
                "| {n} | {name} | {:.0} | {:.3} | {:.3} | {:.0} | {bad} |",
                median(r.iter().map(|o| o.rps).collect()),
                median(r.iter().map(|o| o.p50_ms).collect()),
                median(r.iter().map(|o| o.p99_ms).collect()),
                median(cpu)
            );
            if name.starts_with("client_credentials ES256") {
                let sc = &scenarios(&server.api, token)[si];
                let half = run(
                    &oha,
                    sc,
                    server.child.id(),
                    Some(median(r.iter().map(|o| o.rps).collect()) / 2.0),
                    secs,
                );
                println!(
                    "| {n} | {name} at half the peak rate ({:.0}/s) | {:.0} | {:.3} | {:.3} | {:.0} | {} |",
                    median(r.iter().map(|o| o.rps).collect()) / 2.0,
                    half.rps,
                    half.p50_ms,
                    half.p99_ms,
                    half.per_cpu_sec,
                    half.total - half.ok
                );
            }
        }
    }
    println!();
    for (n, dir, server, _) in &servers {
        let rss = rss_mb(server.child.id());
        let mut reloads: Vec<Duration> = (0..3).map(|_| reload_time(server, dir)).collect();
        reloads.sort();
        println!(
            "credentials={n}: RSS {rss:.1} MB; folder reload (100 ms debounce + read + parse + resolve + swap) median {:.2?} of {reloads:.2?}",
            reloads[1]
        );
    }
    if servers.len() >= 2 {
        println!();
        let last = servers.len() - 1;
        for (si, name) in names.iter().enumerate() {
            let small = median(per_cpu[si].clone());
            let large = median(per_cpu[last * names.len() + si].clone());
            println!(
                "{name}: tokens per CPU-s with {} / with {} Credentials = {:.3} (medians of {rounds} interleaved rounds)",
                servers[last].0,
                servers[0].0,
                if small > 0.0 { large / small } else { 0.0 }
            );
        }
    }
    drop(servers);
    if std::env::var("TESSERA_BENCH_MTLS").map_or(true, |v| v != "0") {
        bench_mtls(&oha, &root, secs, rounds);
    }
    println!("load average after: {}", loadavg());
    let _ = std::fs::remove_dir_all(&root);
}
