//! A real Kubernetes control plane for the tests: etcd, kube-apiserver and
//! kube-controller-manager, built from their Go modules (`install`, pinned by `go.mod`/`go.sum`)
//! and started on free loopback ports in a temp folder, the way controller-runtime's envtest
//! does it.
//!
//! ```text
//! install (go build, cached) ─► bin/etcd ─► bin/kube-apiserver ─► bin/kube-controller-manager
//!                                  ▲ loopback      │ RBAC, audit log, ServiceAccount issuer
//!                                  └───────────────┴─ clients: admin or any user (client certs)
//! ```
//!
//! One control plane per test process ([`ControlPlane::shared`]), a namespace per test
//! ([`ControlPlane::namespace`]). The binaries never outlive the test process, even when a test
//! fails or the process is killed (see [`process`]). A binary that will not start fails the
//! test with its name, its flags and the tail of its log.

#![forbid(unsafe_code)]

pub mod audit;
pub mod pki;
pub mod process;
pub mod proxy;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use process::Supervised;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use audit::AuditEvent;
pub use proxy::Proxy;

/// The user of [`ControlPlane::client`]: a member of `system:masters`.
pub const ADMIN: &str = "tessera-test-admin";

/// How long the control plane may take to start on a loaded 2-core machine.
const START_LIMIT: Duration = Duration::from_secs(180);

/// How a control plane is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The API server's watch cache (on in every real cluster). Off, every watch is served by
    /// etcd itself, so compacting etcd makes a watch resumed from an old resourceVersion answer
    /// 410 Gone at once; with it on the cache may still hold the events.
    pub watch_cache: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { watch_cache: true }
    }
}

/// A running control plane.
pub struct ControlPlane {
    /// Its temp folder: data, certificates, kubeconfigs, logs.
    pub dir: PathBuf,
    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub server: String,
    /// etcd's client URL (`http://127.0.0.1:PORT`).
    pub etcd: String,
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
    /// The API server's audit log (JSON lines).
    pub audit_log: PathBuf,
    ca: Mutex<pki::Ca>,
    procs: Mutex<Vec<Supervised>>,
    _cleanup: ChildStdin,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        for p in procs.into_iter().rev() {
            p.stop();
        }
    }
}

/// The shared control plane, or why it did not start (kept, so the other tests of the process
/// fail at once with the same reason instead of each trying again).
static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// The test process's control plane, started on first use (building the binaries first if
    /// needed).
    pub fn shared() -> &'static ControlPlane {
        let started = SHARED.get_or_init(|| {
            std::panic::catch_unwind(|| ControlPlane::start(Options::default())).map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "the control plane panicked while starting".into())
            })
        });
        match started {
            Ok(cp) => cp,
            Err(why) => panic!("the test control plane is unavailable: {why}"),
        }
    }

    /// A control plane of its own, stopped when dropped.
    pub fn start(options: Options) -> ControlPlane {
        install();
        // Start it on a thread of its own: the caller may be inside a tokio runtime, and the
        // readiness checks need one of their own.
        std::thread::spawn(move || start(&options))
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// A kubeconfig (YAML) for `user` in `groups`, with a client certificate from the cluster CA.
    pub fn kubeconfig_yaml(&self, user: &str, groups: &[&str]) -> String {
        let pem = self
            .ca
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .client(user, groups);
        kubeconfig(&self.server, &self.ca_pem, Credentials::Cert(&pem))
    }

    /// A kubeconfig (YAML) that authenticates with a bearer `token` (a ServiceAccount's).
    pub fn kubeconfig_yaml_with_token(&self, token: &str) -> String {
        kubeconfig(&self.server, &self.ca_pem, Credentials::Token(token))
    }

    /// Writes [`Self::kubeconfig_yaml`] to `<dir>/<name>.kubeconfig`.
    pub fn kubeconfig_file(&self, name: &str, user: &str, groups: &[&str]) -> PathBuf {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, self.kubeconfig_yaml(user, groups)).expect("write kubeconfig");
        path
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// An admin client, on the calling runtime.
    pub async fn client(&self) -> kube::Client {
        client_from_yaml(&std::fs::read_to_string(self.admin_kubeconfig()).expect("read")).await
    }

    /// A client authenticated as `user` in `groups` (RBAC judges it).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        client_from_yaml(&self.kubeconfig_yaml(user, groups)).await
    }

    /// Creates a fresh namespace `<prefix>-<random>` (labelled `tessera.dev/test`) and returns
    /// its name. Tests share the control plane and never share a namespace.
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> String {
        let name = format!("{prefix}-{}", nonce());
        assert!(name.len() <= 63, "namespace name {name} is too long");
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"tessera.dev/test": prefix}}
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// Byte offset of the audit log's end: pass it to [`Self::audit_since`].
    pub fn audit_mark(&self) -> u64 {
        std::fs::metadata(&self.audit_log).map_or(0, |m| m.len())
    }

    /// The requests completed since `mark` (give the server a moment to write the last ones).
    pub fn audit_since(&self, mark: u64) -> Vec<AuditEvent> {
        let bytes = std::fs::read(&self.audit_log).unwrap_or_default();
        let from = usize::try_from(mark).unwrap_or(usize::MAX).min(bytes.len());
        audit::parse(&String::from_utf8_lossy(&bytes[from..]))
    }

    /// Compacts etcd's history up to its current revision (what the API server does every five
    /// minutes): a watch resumed from an older resourceVersion then gets 410 Gone, unless the
    /// watch cache still has the events.
    pub async fn compact(&self) -> i64 {
        let http = reqwest::Client::new();
        let range: serde_json::Value = http
            .post(format!("{}/v3/kv/range", self.etcd))
            .json(
                &json!({"key": base64::engine::general_purpose::STANDARD.encode("/"), "limit": 1}),
            )
            .send()
            .await
            .expect("etcd range")
            .json()
            .await
            .expect("etcd range json");
        let rev: i64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("etcd revision");
        let r = http
            .post(format!("{}/v3/kv/compaction", self.etcd))
            .json(&json!({"revision": rev.to_string(), "physical": true}))
            .send()
            .await
            .expect("etcd compaction");
        assert!(r.status().is_success(), "etcd compaction: {}", r.status());
        rev
    }

    /// The API server's `host:port`, for a [`Proxy`] in front of it.
    pub fn address(&self) -> String {
        self.server.trim_start_matches("https://").to_owned()
    }

    /// A kubeconfig (YAML) for `user` in `groups` that reaches the API server through `proxy`
    /// (the serving certificate names 127.0.0.1, so TLS still verifies).
    pub fn kubeconfig_yaml_via(&self, proxy: &Proxy, user: &str, groups: &[&str]) -> String {
        let pem = self
            .ca
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .client(user, groups);
        kubeconfig(
            &format!("https://{}", proxy.addr),
            &self.ca_pem,
            Credentials::Cert(&pem),
        )
    }
}

/// Runs `install` (builds the control plane binaries and helm when their inputs changed).
pub fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = root().join("install");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .status()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            status.success(),
            "{} failed ({status}): the test control plane could not be built (its output is above)",
            script.display()
        );
    });
}

/// This crate's folder (the Go module, `install`, `bin/`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// helm from the venv `install` sets up.
pub fn helm() -> PathBuf {
    install();
    root().join(".venv/bin/helm")
}

fn bin(name: &str) -> PathBuf {
    let p = root().join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run {} (it builds the control plane from its Go modules)",
        p.display(),
        root().join("install").display()
    );
    p
}

fn nonce() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:06x}",
        (t ^ std::process::id() ^ n.wrapping_mul(0x9e37_79b9)) & 0xff_ffff
    )
}

/// A free loopback port (the listener is closed before the binary binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

enum Credentials<'a> {
    Cert(&'a pki::Pem),
    Token(&'a str),
}

fn kubeconfig(server: &str, ca: &str, creds: Credentials<'_>) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match creds {
        Credentials::Cert(p) => json!({
            "client-certificate-data": b64(&p.cert),
            "client-key-data": b64(&p.key),
        }),
        Credentials::Token(t) => json!({"token": t}),
    };
    // JSON is YAML.
    serde_json::to_string_pretty(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca),
        }}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    }))
    .expect("kubeconfig json")
}

/// A client from a kubeconfig's text.
pub async fn client_from_yaml(yaml: &str) -> kube::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kc = Kubeconfig::from_yaml(yaml).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    kube::Client::try_from(cfg).expect("client")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    p.display().to_string()
}

fn start(options: &Options) -> ControlPlane {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("tessera-control-plane-{}", nonce()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // TESSERA_KEEP_CONTROL_PLANE=1 keeps the folder (logs, audit log, kubeconfigs) for a look.
    let cleanup = process::remove_at_exit(
        &dir,
        std::env::var_os("TESSERA_KEEP_CONTROL_PLANE").is_some(),
    );

    let ca = pki::Ca::generate();
    let serving = ca.server();
    let ca_file = write(&dir, "ca.crt", &ca.cert);
    let cert_file = write(&dir, "apiserver.crt", &serving.cert);
    let key_file = write(&dir, "apiserver.key", &serving.key);
    let sa = pki::service_account_key();
    let sa_key = write(&dir, "service-account.key", &sa.key);
    let sa_pub = write(&dir, "service-account.pub", &sa.cert);
    let audit_policy = write(&dir, "audit-policy.yaml", audit::POLICY);
    let audit_log = dir.join("audit.log");

    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let server = format!("https://127.0.0.1:{api_port}");
    let s = |v: &str| v.to_owned();

    let etcd_args = vec![
        s("--name=test"),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=test={peer_url}"),
        // A test cluster's data is disposable: skip fsync (envtest's etcd does the same).
        s("--unsafe-no-fsync=true"),
        s("--log-level=warn"),
    ];
    let mut apiserver_args = vec![
        format!("--etcd-servers={etcd_url}"),
        s("--bind-address=127.0.0.1"),
        s("--advertise-address=127.0.0.1"),
        format!("--secure-port={api_port}"),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        format!("--tls-cert-file={cert_file}"),
        format!("--tls-private-key-file={key_file}"),
        format!("--client-ca-file={ca_file}"),
        s("--authorization-mode=RBAC"),
        s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
        format!("--service-account-key-file={sa_pub}"),
        format!("--service-account-signing-key-file={sa_key}"),
        s("--service-cluster-ip-range=10.0.0.0/24"),
        s("--endpoint-reconciler-type=none"),
        s("--enable-priority-and-fairness=false"),
        s("--profiling=false"),
        format!("--audit-policy-file={audit_policy}"),
        format!("--audit-log-path={}", audit_log.display()),
        s("--audit-log-mode=blocking"),
        s("--audit-log-maxsize=0"),
    ];
    if !options.watch_cache {
        apiserver_args.push(s("--watch-cache=false"));
    }

    let admin_yaml = kubeconfig(
        &server,
        &ca.cert,
        Credentials::Cert(&ca.client(ADMIN, &["system:masters"])),
    );
    let admin_kc = write(&dir, "admin.kubeconfig", &admin_yaml);
    let kcm_kc = write(
        &dir,
        "kube-controller-manager.kubeconfig",
        &kubeconfig(
            &server,
            &ca.cert,
            Credentials::Cert(&ca.client("system:kube-controller-manager", &["system:masters"])),
        ),
    );
    let kcm_args = vec![
        format!("--kubeconfig={kcm_kc}"),
        // The controllers Tessera's behaviour rests on: owner-reference garbage collection,
        // namespace deletion, ServiceAccounts and their tokens.
        s("--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token"),
        format!("--service-account-private-key-file={sa_key}"),
        format!("--root-ca-file={ca_file}"),
        s("--leader-elect=false"),
        s("--secure-port=0"),
        s("--use-service-account-credentials=false"),
    ];

    let mut procs = Vec::new();
    let mut etcd = Supervised::start("etcd", &bin("etcd"), &etcd_args, dir.join("etcd.log"));
    wait_for(started, "etcd", &dir.join("etcd.log"), || {
        etcd.check_alive(&etcd_args);
        std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_ok()
    });
    procs.push(etcd);

    let mut api = Supervised::start(
        "kube-apiserver",
        &bin("kube-apiserver"),
        &apiserver_args,
        dir.join("kube-apiserver.log"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(client_from_yaml(&admin_yaml));
    wait_for(
        started,
        "kube-apiserver /readyz",
        &dir.join("kube-apiserver.log"),
        || {
            api.check_alive(&apiserver_args);
            rt.block_on(async {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .expect("request");
                tokio::time::timeout(Duration::from_secs(5), client.request_text(req))
                    .await
                    .is_ok_and(|r| r.is_ok_and(|t| t.trim() == "ok"))
            })
        },
    );
    procs.push(api);
    // Before the controller manager starts: its garbage collector discovers the resources it
    // watches at start and then only every 30 s, so CRDs installed later would not be collected
    // for up to half a minute.
    rt.block_on(install_crds(&client));

    let mut kcm = Supervised::start(
        "kube-controller-manager",
        &bin("kube-controller-manager"),
        &kcm_args,
        dir.join("kube-controller-manager.log"),
    );
    // The ServiceAccount controller creates `default` in every namespace: once it has, the
    // controllers are running.
    wait_for(
        started,
        "kube-controller-manager (the default ServiceAccount)",
        &dir.join("kube-controller-manager.log"),
        || {
            kcm.check_alive(&kcm_args);
            rt.block_on(async {
                Api::<ServiceAccount>::namespaced(client.clone(), "default")
                    .get_opt("default")
                    .await
                    .is_ok_and(|sa| sa.is_some())
            })
        },
    );
    procs.push(kcm);
    eprintln!(
        "control plane: {server} (etcd {etcd_url}) ready in {:.1} s; admin kubeconfig {admin_kc}",
        started.elapsed().as_secs_f64()
    );
    ControlPlane {
        dir,
        server,
        etcd: etcd_url,
        ca_pem: ca.cert.clone(),
        audit_log,
        ca: Mutex::new(ca),
        procs: Mutex::new(procs),
        _cleanup: cleanup,
    }
}

/// Tessera's CRDs (`crds/*.yaml`), server-side applied; returns once the API server serves
/// every one of them (condition `Established`).
async fn install_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let dir = root().join("../../crds");
    let mut names = Vec::new();
    for f in std::fs::read_dir(&dir).expect("crds/").flatten() {
        let path = f.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read CRD");
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = crd.metadata.name.clone().expect("name");
        api.patch(
            &name,
            &kube::api::PatchParams::apply("tessera-tests").force(),
            &kube::api::Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name} from {}: {e}", path.display()));
        names.push(name);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in names {
        loop {
            let established = api.get(&name).await.ok().is_some_and(|c| {
                c.status
                    .and_then(|s| s.conditions)
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "CRD {name} never became Established"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn wait_for(started: Instant, what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    loop {
        if ready() {
            return;
        }
        assert!(
            started.elapsed() < START_LIMIT,
            "the test control plane did not start within {START_LIMIT:?}: waiting for {what}\nlast lines of {}:\n{}",
            log.display(),
            process::tail(log, 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
