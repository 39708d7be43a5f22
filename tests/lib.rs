//! The end-to-end harness: a real API server (the test control plane built from the Go modules
//! in `tests/control-plane`, or any cluster named by `TESSERA_E2E_KUBECONFIG`), a TCP proxy
//! between the binaries and it (cutting it is how the suite makes the API server unreachable),
//! the shipped binaries as child processes, and small HTTP helpers. The scenarios are in
//! `e2e.rs`.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
pub use tessera_control_plane::{ControlPlane, Proxy};
use tessera_crds::manifest::{Resource, parse};
use tessera_crds::{Credential, Role};

/// The environment variable naming another cluster's kubeconfig (default: the test control
/// plane).
pub const KUBECONFIG_ENV: &str = "TESSERA_E2E_KUBECONFIG";

/// Field manager of the suite's own writes.
pub const MANAGER: &str = "tessera-e2e";

/// The API server the suite runs against.
pub struct Cluster {
    /// A client with the kubeconfig's own (admin) credentials, for the suite's writes and reads.
    pub admin: kube::Client,
    /// The kubeconfig the binaries' kubeconfigs are derived from.
    kubeconfig: Kubeconfig,
    /// The test control plane, unless `TESSERA_E2E_KUBECONFIG` names another cluster.
    pub control_plane: Option<&'static ControlPlane>,
    /// Names of what this run creates start with this (fresh namespaces, no clash with others).
    pub prefix: String,
    /// Where logs and kubeconfigs go.
    pub dir: PathBuf,
    namespaces: Mutex<Vec<String>>,
}

impl Cluster {
    /// Connects to `cp` (a control plane of the test's own, e.g. one without a watch cache).
    pub async fn connect_to(cp: &'static ControlPlane, label: &str) -> Cluster {
        Cluster::connect_inner(label, Some(cp)).await
    }

    /// Connects to the cluster named by `TESSERA_E2E_KUBECONFIG` (and installs the CRDs there),
    /// else to the test control plane (started on first use, CRDs installed).
    pub async fn connect(label: &str) -> Cluster {
        Cluster::connect_inner(label, None).await
    }

    async fn connect_inner(label: &str, own: Option<&'static ControlPlane>) -> Cluster {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ std::process::id())
            .unwrap_or_default();
        let prefix = format!("te2e-{label}-{:06x}", nonce & 0xff_ffff);
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let configured = std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty());
        let (admin, kubeconfig, control_plane) = match (own, configured) {
            (None, Some(path)) => {
                let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
                    panic!("{KUBECONFIG_ENV}={}: {e}", Path::new(&path).display())
                });
                let cfg =
                    kube::Config::from_custom_kubeconfig(kc.clone(), &KubeConfigOptions::default())
                        .await
                        .expect("a usable kubeconfig");
                let client = kube::Client::try_from(cfg).expect("client");
                install_crds(&client).await;
                (client, kc, None)
            }
            (own, _) => {
                let cp = own.unwrap_or_else(ControlPlane::shared);
                let kc = Kubeconfig::read_from(cp.admin_kubeconfig()).expect("admin kubeconfig");
                (cp.client().await, kc, Some(cp))
            }
        };
        eprintln!(
            "e2e: {} (names start with {prefix}; logs in {})",
            match control_plane {
                Some(cp) => format!("test control plane {}", cp.server),
                None => format!("the cluster in {KUBECONFIG_ENV}"),
            },
            dir.display()
        );
        Cluster {
            admin,
            kubeconfig,
            control_plane,
            prefix,
            dir,
            namespaces: Mutex::default(),
        }
    }

    /// A fresh namespace `<prefix>-<suffix>`, deleted when the cluster handle drops.
    pub async fn namespace(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        assert!(name.len() <= 63, "namespace name {name} is too long");
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        Api::<Namespace>::all(self.admin.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        name
    }

    /// The API server's `host:port` and whether it speaks TLS.
    fn upstream(&self) -> (String, Option<String>) {
        let cluster = self.current_cluster();
        let server = cluster["server"].as_str().expect("cluster.server");
        let url = reqwest::Url::parse(server).expect("cluster.server is a URL");
        let host = url.host_str().expect("host").to_owned();
        let port = url.port_or_known_default().expect("port");
        let tls = (url.scheme() == "https").then(|| {
            cluster["tls-server-name"]
                .as_str()
                .map_or_else(|| host.trim_matches(['[', ']']).to_owned(), str::to_owned)
        });
        (format!("{host}:{port}"), tls)
    }

    fn current_cluster(&self) -> Value {
        let kc = serde_json::to_value(&self.kubeconfig).expect("kubeconfig");
        let current = kc["current-context"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ctx = kc["contexts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == current.as_str())
            .expect("the current context");
        let cluster_name = ctx["context"]["cluster"].clone();
        kc["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == cluster_name)
            .map(|c| c["cluster"].clone())
            .expect("the current context's cluster")
    }

    /// The admin kubeconfig file (for helm).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        let path = self.dir.join("admin.kubeconfig");
        if !path.exists() {
            std::fs::write(
                &path,
                serde_json::to_vec_pretty(&self.kubeconfig).expect("json"),
            )
            .expect("write kubeconfig");
        }
        path
    }

    /// Starts a proxy to the API server for the binaries.
    pub async fn proxy(&self) -> Proxy {
        let (upstream, _) = self.upstream();
        Proxy::start(upstream).await
    }

    /// A kubeconfig for a binary: the API server reached through `proxy`, with the admin
    /// credentials, or with `token` (a ServiceAccount's) instead.
    pub fn kubeconfig_for(&self, name: &str, proxy: &Proxy, token: Option<&str>) -> PathBuf {
        let (_, tls_name) = self.upstream();
        let mut kc = serde_json::to_value(&self.kubeconfig).expect("kubeconfig");
        let current = kc["current-context"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut cluster_name = Value::Null;
        let mut user_name = Value::Null;
        for c in kc["contexts"].as_array_mut().into_iter().flatten() {
            if c["name"] == current.as_str() {
                cluster_name = c["context"]["cluster"].clone();
                user_name = c["context"]["user"].clone();
            }
        }
        for c in kc["clusters"].as_array_mut().into_iter().flatten() {
            if c["name"] == cluster_name {
                let scheme = if tls_name.is_some() { "https" } else { "http" };
                c["cluster"]["server"] = json!(format!("{scheme}://{}", proxy.addr));
                if let Some(n) = &tls_name {
                    c["cluster"]["tls-server-name"] = json!(n);
                }
            }
        }
        if let Some(token) = token {
            for u in kc["users"].as_array_mut().into_iter().flatten() {
                if u["name"] == user_name {
                    u["user"] = json!({"token": token});
                }
            }
        }
        let path = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, serde_json::to_vec_pretty(&kc).expect("json")).expect("write");
        path
    }

    /// Deletes what this run created.
    pub async fn cleanup(&self) {
        let names = std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|e| e.into_inner()));
        for n in names {
            let _ = Api::<Namespace>::all(self.admin.clone())
                .delete(&n, &DeleteParams::background())
                .await;
        }
    }
}

/// Server-side applies `crds/*.yaml` and waits until the API server serves them.
async fn install_crds(client: &kube::Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut names = Vec::new();
    for f in std::fs::read_dir(&dir).expect("crds/").flatten() {
        let path = f.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).expect("read"))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = crd.metadata.name.clone().expect("name");
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        names.push(name);
    }
    for name in names {
        eventually(
            Duration::from_secs(60),
            &format!("CRD {name} established"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    api.get(&name).await.ok().is_some_and(|c| {
                        c.status
                            .and_then(|s| s.conditions)
                            .into_iter()
                            .flatten()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
                }
            },
        )
        .await;
    }
}

/// Creates `r` in `ns` with the suite's field manager.
pub async fn create(client: &kube::Client, ns: &str, r: Resource) {
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    macro_rules! go {
        ($t:ty, $o:expr) => {{
            let mut o = $o;
            o.metadata.namespace = Some(ns.to_owned());
            let name = o.metadata.name.clone().unwrap_or_default();
            Api::<$t>::namespaced(client.clone(), ns)
                .create(&pp, &o)
                .await
                .unwrap_or_else(|e| panic!("creating {ns}/{name}: {e}"));
        }};
    }
    match r {
        Resource::ApiProxy(o) => go!(tessera_crds::ApiProxy, o),
        Resource::AuthPolicy(o) => go!(tessera_crds::AuthPolicy, o),
        Resource::Credential(o) => go!(Credential, o),
        Resource::Role(o) => go!(Role, o),
        Resource::Secret(o) => go!(Secret, o),
        Resource::ConfigMap(o) => go!(k8s_openapi::api::core::v1::ConfigMap, o),
    }
}

/// Creates every object of the manifests in `dir` (Secrets first, as a user following an
/// example's README would) in `ns`; returns the names of the Credentials created.
pub async fn create_example(client: &kube::Client, ns: &str, dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("example folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort_by_key(|p| !p.ends_with("secrets.yaml"));
    let mut credentials = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for r in parse(&text, &f.display().to_string())
            .expect("parse")
            .resources
        {
            if let Resource::Credential(c) = &r {
                credentials.push(c.metadata.name.clone().unwrap_or_default());
            }
            create(client, ns, r).await;
        }
        // The Kubernetes objects Tessera does not read (a client's ServiceAccount and
        // Deployment) are created too, as `kubectl apply -f` would.
        for doc in text.split("\n---") {
            let Ok(obj) = serde_saphyr::from_str::<Value>(doc) else {
                continue;
            };
            let api_version = obj["apiVersion"].as_str().unwrap_or_default();
            let kind = obj["kind"].as_str().unwrap_or_default();
            let read_by_tessera = api_version.starts_with("tessera.dev/")
                || (api_version == "v1" && matches!(kind, "Secret" | "ConfigMap"));
            if !kind.is_empty() && !read_by_tessera {
                create_other(client, ns, obj).await;
            }
        }
    }
    credentials
}

/// Creates a Kubernetes object of any kind in `ns` (a namespaced kind).
pub async fn create_other(client: &kube::Client, ns: &str, mut obj: Value) {
    use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
    let api_version = obj["apiVersion"].as_str().unwrap_or("v1").to_owned();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind));
    obj["metadata"]["namespace"] = Value::from(ns);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let o: DynamicObject = serde_json::from_value(obj).expect("an object");
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .create(&pp, &o)
        .await
        .unwrap_or_else(|e| panic!("creating {kind} {ns}/{name}: {e}"));
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process, killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A shipped binary, built by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    // target/<profile>/deps/e2e-<hash> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("exe");
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run the suite with `cargo test --workspace`, which builds both binaries",
        path.display()
    );
    path
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Spawns `bin` with `args`, `KUBECONFIG=kubeconfig`, stderr to `<dir>/<log>.log`.
pub fn spawn(
    cluster: &Cluster,
    bin_name: &str,
    log: &str,
    kubeconfig: &Path,
    args: &[String],
) -> Proc {
    let log = std::fs::File::create(cluster.dir.join(format!("{log}.log"))).expect("log");
    Proc(
        Command::new(bin(bin_name))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("POD_NAMESPACE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin_name}: {e}")),
    )
}

/// A token server replica.
pub struct Replica {
    /// Token API port.
    pub api: u16,
    /// Admin port.
    pub admin: u16,
    /// The process.
    pub proc: Proc,
}

impl Replica {
    /// `http://127.0.0.1:<api><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    /// `http://127.0.0.1:<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }
}

/// Spawns token-server replica `i` (`--source kube`, one API thread) serving `namespaces`
/// (comma-separated) with its key set in `keys_ns`.
pub fn spawn_replica(
    cluster: &Cluster,
    kubeconfig: &Path,
    i: usize,
    namespaces: &str,
    keys_ns: &str,
    issuer: &str,
) -> Replica {
    let (api, admin) = (free_port(), free_port());
    let proc = spawn(
        cluster,
        "token-server",
        &format!("token-server-{i}"),
        kubeconfig,
        &[
            "--source=kube".into(),
            format!("--namespaces={namespaces}"),
            format!("--keys-namespace={keys_ns}"),
            format!("--listen=127.0.0.1:{api}"),
            format!("--admin-listen=127.0.0.1:{admin}"),
            format!("--issuer={issuer}"),
            "--api-threads=1".into(),
            // The suites poll with clients that are (rightly) refused while changes propagate;
            // the lockout would turn one replica's 401s into 429s while another catches up.
            "--free-failed-auth=100000".into(),
            "--max-failed-auth-per-client=100000".into(),
            "--max-failed-auth-per-address=100000".into(),
        ],
    );
    Replica { api, admin, proc }
}

/// An HTTP answer: status and JSON body (`null` if not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Value,
}

impl Answer {
    /// A string field of the body; panics naming it if absent.
    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no `{field}` in {} {}", self.status, self.body))
            .to_owned()
    }
}

/// POSTs a form with Basic client authentication.
pub async fn post_form(
    http: &reqwest::Client,
    url: &str,
    client: (&str, &str),
    form: &[(&str, &str)],
) -> Answer {
    let r = http
        .post(url)
        .basic_auth(client.0, Some(client.1))
        .form(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    Answer {
        status,
        body: r.json().await.unwrap_or(Value::Null),
    }
}

/// GETs JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Answer {
    match http.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            Answer {
                status,
                body: r.json().await.unwrap_or(Value::Null),
            }
        }
        Err(_) => Answer {
            status: 0,
            body: Value::Null,
        },
    }
}

/// A TokenRequest token for `ns/sa` with `audience` (what a projected volume mounts).
pub async fn sa_token(cluster: &Cluster, ns: &str, sa: &str, audience: &str) -> String {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": 3600}});
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&body).expect("json"))
    .expect("request");
    let v: Value = cluster.admin.request(req).await.expect("TokenRequest");
    v["status"]["token"].as_str().expect("token").to_owned()
}

/// Creates the ServiceAccount `ns/name`.
pub async fn service_account(cluster: &Cluster, ns: &str, name: &str) {
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/serviceaccounts"))
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
            )
            .expect("json"),
        )
        .expect("request");
    let _: Value = cluster
        .admin
        .request(req)
        .await
        .expect("create ServiceAccount");
}
