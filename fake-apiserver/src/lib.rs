//! An in-process fake of the Kubernetes API server, for controller tests and benchmarks that
//! must run without a cluster (CI has none).
//!
//! It speaks the wire protocol kube-rs uses, over real HTTP on 127.0.0.1: list (with label
//! selectors), watch (from a resourceVersion, streamed), get, create, replace (with
//! resourceVersion preconditions), patch (merge, strategic treated as merge, and server-side
//! apply) on objects and on their `status` subresource, and delete with owner-reference
//! garbage collection. Any group, version and resource is accepted, so Secrets, Leases, Events
//! and the Tessera CRDs all work without registration.
//!
//! Simplifications, all on purpose: server-side apply is modelled for one field manager
//! (applied `metadata.labels`/`annotations`/`ownerReferences` and top-level fields replace the
//! stored ones; a status apply keeps top-level status fields another writer merge-patched in;
//! no managed-fields bookkeeping); no schema validation or admission; `generation`
//! moves when anything outside `metadata` and `status` changes; garbage collection is immediate.
//! It counts requests by verb, so benchmarks can report API requests per object, and it can be
//! made unreachable (every request 503, watches cut) to test outages.

// Handlers return the error response itself.
#![allow(clippy::result_large_err)]

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;

/// `(collection, namespace, name)`; collection is e.g. `apis/tessera.dev/v1alpha1/credentials`.
type Key = (String, String, String);

#[derive(Default)]
struct State {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    /// Every change, for watches that start from a resourceVersion: (collection, rv, type, obj).
    log: Vec<(String, u64, &'static str, Value)>,
    requests: BTreeMap<String, u64>,
    /// Top-level status fields last written by a merge patch (another field manager, e.g. a
    /// token server revoking): a later server-side apply that omits them keeps them, as field
    /// ownership would on a real API server.
    foreign_status: BTreeMap<Key, std::collections::BTreeSet<String>>,
    access: Vec<Access>,
}

/// One request made with a bearer token, as RBAC would see it: for checking that a set of Roles
/// allows everything a binary did (the fake itself authorizes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The bearer token.
    pub token: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch` or `delete`.
    pub verb: String,
    /// API group; empty for the core group.
    pub group: String,
    /// Resource, e.g. `secrets`.
    pub resource: String,
    /// Subresource, e.g. `status`.
    pub subresource: Option<String>,
    /// Namespace; `None` for a cluster-scoped request.
    pub namespace: Option<String>,
    /// The object's name: from the path, or a list/watch's `metadata.name` field selector.
    pub name: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: broadcast::Sender<()>,
    down: AtomicBool,
    /// Cut every open watch when set (bumped on outages).
    epoch: std::sync::atomic::AtomicU64,
}

/// A running fake API server. Dropping it stops it.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Starts a fake on an ephemeral loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let (changed, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed,
            down: AtomicBool::new(false),
            epoch: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let s = shared.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move { handle(s, method, uri, headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The base URL, e.g. `http://127.0.0.1:43121`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client talking to this fake.
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let config = kube::Config::new(self.url().parse()?);
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubeconfig YAML for this fake (for binaries started as processes).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    /// Requests served so far, by verb (`list`, `watch`, `get`, `create`, `update`, `patch`,
    /// `delete`).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.lock().requests.clone()
    }

    /// Every request made with a bearer token, in order.
    pub fn access_log(&self) -> Vec<Access> {
        self.lock().access.clone()
    }

    /// Forgets the request counts.
    pub fn reset_requests(&self) {
        self.lock().requests.clear();
    }

    /// Makes the server unreachable (503 to everything, open watches cut) or reachable again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        let _ = self.shared.changed.send(());
    }

    /// Every stored object of a collection (e.g. `api/v1/secrets`), optionally in a namespace.
    pub fn objects(&self, collection: &str, namespace: Option<&str>) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((c, ns, _), _)| c == collection && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// One stored object.
    pub fn object(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(collection.into(), namespace.into(), name.into()))
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }
}

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (r, None, None),
        [r, n] => (r, Some(n.to_string()), None),
        [r, n, s] => (r, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    Some(Target {
        collection: format!("{prefix}/{resource}"),
        namespace,
        name,
        subresource: sub,
    })
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_owned());
            (dec(k), dec(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Label selector of the forms `a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated.
fn matches_labels(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    sel.split(',').all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            get(k) != Some(v)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            get(k) == Some(v)
        } else if let Some(k) = term.strip_prefix('!') {
            get(k).is_none()
        } else {
            get(term).is_some()
        }
    })
}

fn ns_of(v: &Value) -> String {
    v.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn rv_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn handle(
    s: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the fake API server is down".into(),
        );
    }
    let Some(t) = parse_path(uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route {}", uri.path()),
        );
    };
    let q = query(&uri);
    let is_watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (&method, &t.name, is_watch) {
        (&Method::GET, None, true) => "watch",
        (&Method::GET, None, false) => "list",
        (&Method::GET, Some(_), _) => "get",
        (&Method::POST, _, _) => "create",
        (&Method::PUT, _, _) => "update",
        (&Method::PATCH, _, _) => "patch",
        (&Method::DELETE, _, _) => "delete",
        _ => "other",
    };
    *lock(&s).requests.entry(verb.to_owned()).or_default() += 1;
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        let mut parts = t.collection.rsplit('/');
        let resource = parts.next().unwrap_or_default().to_owned();
        let group = match t.collection.split('/').collect::<Vec<_>>().as_slice() {
            ["apis", g, ..] => (*g).to_owned(),
            _ => String::new(),
        };
        let selected = q
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .map(str::to_owned);
        let access = Access {
            token: token.to_owned(),
            verb: verb.to_owned(),
            group,
            resource,
            subresource: t.subresource.clone(),
            namespace: t.namespace.clone(),
            name: t.name.clone().or(selected),
        };
        lock(&s).access.push(access);
    }
    match verb {
        "watch" => watch(s, t, q).await,
        "list" => list(&s, &t, &q),
        "get" => get(&s, &t),
        "create" => create(&s, &t, &body),
        "update" => replace(&s, &t, &body),
        "patch" => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            patch(&s, &t, ct, &body)
        }
        "delete" => delete(&s, &t),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            method.to_string(),
        ),
    }
}

/// Field selector of the forms `metadata.name=x`, `metadata.namespace=y`, comma-separated.
fn matches_fields(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| {
        let Some((k, v)) = term.split_once('=') else {
            return true;
        };
        let path = format!("/{}", k.trim_end_matches('=').replace('.', "/"));
        obj.pointer(&path).and_then(Value::as_str) == Some(v.trim_start_matches('='))
    })
}

fn list(s: &Shared, t: &Target, q: &BTreeMap<String, String>) -> Response {
    let st = lock(s);
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((c, ns, _), v)| {
            *c == t.collection
                && t.namespace.as_ref().is_none_or(|n| n == ns)
                && matches_labels(v, q.get("labelSelector"))
                && matches_fields(v, q.get("fieldSelector"))
        })
        .map(|(_, v)| v.clone())
        .collect();
    let v = json!({
        "apiVersion": "v1", "kind": "List",
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    });
    ok(StatusCode::OK, &v)
}

fn get(s: &Shared, t: &Target) -> Response {
    let st = lock(s);
    let key = key(t);
    match st.objects.get(&key) {
        Some(v) => ok(StatusCode::OK, v),
        None => not_found(t),
    }
}

fn key(t: &Target) -> Key {
    (
        t.collection.clone(),
        t.namespace.clone().unwrap_or_default(),
        t.name.clone().unwrap_or_default(),
    )
}

fn not_found(t: &Target) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "{} \"{}\" not found",
            t.collection,
            t.name.as_deref().unwrap_or("")
        ),
    )
}

fn parse_body(body: &[u8]) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "body is not a JSON object".into(),
        )),
    }
}

impl State {
    fn record(&mut self, collection: &str, kind: &'static str, obj: Value) {
        self.log.push((collection.to_owned(), self.rv, kind, obj));
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }
}

fn set_meta(v: &mut Value, field: &str, val: Value) {
    if let Some(m) = v
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        m.insert(field.to_owned(), val);
    }
}

fn create(s: &Shared, t: &Target, body: &[u8]) -> Response {
    let mut obj = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let ns = t.namespace.clone().unwrap_or_default();
    let mut name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut st = lock(s);
    if name.is_empty() {
        if let Some(g) = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
        {
            name = format!("{g}{:05x}", st.uid + 1);
        } else {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name: Required value".into(),
            );
        }
    }
    let k = (t.collection.clone(), ns.clone(), name.clone());
    if st.objects.contains_key(&k) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", t.collection),
        );
    }
    st.uid += 1;
    let rv = st.next_rv();
    set_meta(&mut obj, "name", json!(name));
    if !ns.is_empty() {
        set_meta(&mut obj, "namespace", json!(ns));
    }
    set_meta(
        &mut obj,
        "uid",
        json!(format!("00000000-0000-4000-8000-{:012x}", st.uid)),
    );
    set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
    set_meta(&mut obj, "generation", json!(1));
    set_meta(&mut obj, "creationTimestamp", json!(now()));
    // Secrets: stringData is write-only, merged into data as the real API server does.
    merge_string_data(&mut obj);
    st.objects.insert(k, obj.clone());
    st.record(&t.collection, "ADDED", obj.clone());
    drop(st);
    let _ = s.changed.send(());
    ok(StatusCode::CREATED, &obj)
}

fn merge_string_data(obj: &mut Value) {
    use base64::Engine as _;
    let Some(o) = obj.as_object_mut() else { return };
    let Some(Value::Object(sd)) = o.remove("stringData") else {
        return;
    };
    let data = o.entry("data").or_insert_with(|| json!({}));
    if let Value::Object(d) = data {
        for (k, v) in sd {
            let s = v.as_str().unwrap_or_default();
            d.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(s)),
            );
        }
    }
}

/// The parts of an object whose change moves `generation`.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

/// Stores `new` in place of `old` (already present), bumping rv and maybe generation.
fn store_update(s: &Shared, st: &mut State, t: &Target, old: &Value, mut new: Value) -> Value {
    for f in ["uid", "creationTimestamp", "name", "namespace"] {
        if let Some(v) = old.pointer(&format!("/metadata/{f}")) {
            set_meta(&mut new, f, v.clone());
        }
    }
    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = if spec_part(old) != spec_part(&new) {
        generation + 1
    } else {
        generation
    };
    set_meta(&mut new, "generation", json!(generation));
    merge_string_data(&mut new);
    let mut unchanged = new.clone();
    set_meta(
        &mut unchanged,
        "resourceVersion",
        old.pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null),
    );
    if unchanged == *old {
        // A no-op write does not bump resourceVersion or notify watchers (like the real one).
        return old.clone();
    }
    let rv = st.next_rv();
    set_meta(&mut new, "resourceVersion", json!(rv.to_string()));
    st.objects.insert(key(t), new.clone());
    st.record(&t.collection, "MODIFIED", new.clone());
    let _ = s.changed.send(());
    new
}

fn check_rv(t: &Target, body: &Value, old: &Value) -> Result<(), Response> {
    match (rv_of(body), rv_of(old)) {
        (Some(want), Some(have)) if want != have => Err(status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                t.collection,
                t.name.as_deref().unwrap_or("")
            ),
        )),
        _ => Ok(()),
    }
}

fn replace(s: &Shared, t: &Target, body: &[u8]) -> Response {
    let body = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut st = lock(s);
    let Some(old) = st.objects.get(&key(t)).cloned() else {
        return not_found(t);
    };
    if let Err(r) = check_rv(t, &body, &old) {
        return r;
    }
    let new = if t.subresource.as_deref() == Some("status") {
        let mut n = old.clone();
        n["status"] = body.get("status").cloned().unwrap_or(Value::Null);
        n
    } else {
        let mut n = body;
        if t.collection.starts_with("apis/tessera.dev/") {
            // The status subresource is on: writes to the object leave status alone.
            match old.get("status") {
                Some(st) => n["status"] = st.clone(),
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        n
    };
    let out = store_update(s, &mut st, t, &old, new);
    ok(StatusCode::OK, &out)
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn patch(s: &Shared, t: &Target, content_type: &str, body: &[u8]) -> Response {
    let body = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let apply = content_type.starts_with("application/apply-patch");
    let merge = content_type.starts_with("application/merge-patch")
        || content_type.starts_with("application/strategic-merge-patch");
    if !apply && !merge {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the fake does not support patch type {content_type}"),
        );
    }
    let status_sub = t.subresource.as_deref() == Some("status");
    let mut st = lock(s);
    let Some(old) = st.objects.get(&key(t)).cloned() else {
        drop(st);
        if apply && !status_sub {
            return create(s, t, &serde_json::to_vec(&body).unwrap_or_default());
        }
        return not_found(t);
    };
    if let Err(r) = check_rv(t, &body, &old) {
        return r;
    }
    let mut new = old.clone();
    if status_sub {
        let foreign = st.foreign_status.entry(key(t)).or_default();
        if apply {
            let mut applied = body.get("status").cloned().unwrap_or(Value::Null);
            if let Some(a) = applied.as_object_mut() {
                foreign.retain(|f| !a.contains_key(f));
                for f in foreign.iter() {
                    if let Some(v) = old.pointer(&format!("/status/{f}")) {
                        a.insert(f.clone(), v.clone());
                    }
                }
            }
            new["status"] = applied;
        } else if let Some(p) = body.get("status") {
            foreign.extend(p.as_object().into_iter().flatten().map(|(k, _)| k.clone()));
            merge_patch(&mut new["status"], p);
        }
    } else if apply {
        // One field manager: what it applies replaces what it applied before.
        if let (Some(n), Some(b)) = (new.as_object_mut(), body.as_object()) {
            for (k, v) in b {
                if k == "metadata" || k == "status" {
                    continue;
                }
                n.insert(k.clone(), v.clone());
            }
        }
        for f in ["labels", "annotations", "ownerReferences", "finalizers"] {
            if let Some(v) = body.pointer(&format!("/metadata/{f}")) {
                set_meta(&mut new, f, v.clone());
            }
        }
    } else {
        let mut p = body.clone();
        if let Some(o) = p.as_object_mut() {
            o.remove("status");
        }
        merge_patch(&mut new, &p);
    }
    let out = store_update(s, &mut st, t, &old, new);
    ok(StatusCode::OK, &out)
}

fn delete(s: &Shared, t: &Target) -> Response {
    let mut st = lock(s);
    let Some(old) = st.objects.remove(&key(t)) else {
        return not_found(t);
    };
    st.foreign_status.remove(&key(t));
    st.next_rv();
    let mut gone = old.clone();
    set_meta(&mut gone, "resourceVersion", json!(st.rv.to_string()));
    st.record(&t.collection, "DELETED", gone);
    // Garbage collection: dependents of every deleted object, transitively.
    let mut uids: Vec<String> = old
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(|u| vec![u.to_owned()])
        .unwrap_or_default();
    while let Some(uid) = uids.pop() {
        let dependents: Vec<Key> = st
            .objects
            .iter()
            .filter(|(_, v)| {
                v.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in dependents {
            if let Some(v) = st.objects.remove(&k) {
                st.next_rv();
                if let Some(u) = v.pointer("/metadata/uid").and_then(Value::as_str) {
                    uids.push(u.to_owned());
                }
                let mut gone = v;
                set_meta(&mut gone, "resourceVersion", json!(st.rv.to_string()));
                st.record(&k.0, "DELETED", gone);
            }
        }
    }
    drop(st);
    let _ = s.changed.send(());
    ok(StatusCode::OK, &old)
}

async fn watch(s: Arc<Shared>, t: Target, q: BTreeMap<String, String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64)
        .min(290);
    let selector = q.get("labelSelector").cloned();
    let fields = q.get("fieldSelector").cloned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let epoch = s.epoch.load(Ordering::SeqCst);
    let mut changed = s.changed.subscribe();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut sent = from;
        loop {
            let batch: Vec<String> = {
                let st = lock(&s);
                let start = st.log.partition_point(|e| e.1 <= sent);
                let out = st.log[start..]
                    .iter()
                    .filter(|(c, _, _, v)| {
                        *c == t.collection
                            && t.namespace.as_ref().is_none_or(|n| *n == ns_of(v))
                            && matches_labels(v, selector.as_ref())
                            && matches_fields(v, fields.as_ref())
                    })
                    .map(|(_, _, ty, v)| format!("{}\n", json!({"type": ty, "object": v})))
                    .collect();
                sent = st.rv;
                out
            };
            for line in batch {
                if tx.send(Ok(Bytes::from(line))).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                r = changed.recv() => {
                    if matches!(r, Err(broadcast::error::RecvError::Closed)) { return; }
                    if s.epoch.load(Ordering::SeqCst) != epoch { return; }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
