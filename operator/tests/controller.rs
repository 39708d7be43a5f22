//! The operator's wiring against the real control plane (etcd, kube-apiserver and
//! kube-controller-manager built from their Go modules, see tests/control-plane): one scenario
//! per behaviour, each in a namespace of its own, with the operator watching only that
//! namespace. Requests are checked in the API server's own audit log.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tessera_control_plane::ControlPlane;
use tessera_crds::manifest::{Resource, parse};
use tessera_crds::{ApiProxy, AuthPolicy, Credential, Role};
use tessera_operator::metrics::Metrics;
use tessera_operator::plan::Settings;
use tessera_operator::run::{Config, Operator};

const SECRETS: &str = "api/v1/secrets";
const CREDS: &str = "apis/tessera.dev/v1alpha1/credentials";

/// The operator's identity in these tests: the audit log tells its requests from the test's.
const OPERATOR_USER: &str = "tessera-operator-under-test";
const KEYS: &str = "tessera-keys";
const EVENTS: &str = "apis/events.k8s.io/v1/events";

fn config(namespaces: Vec<String>, keys_namespace: &str) -> Config {
    Config {
        namespaces,
        keys_namespace: keys_namespace.into(),
        keys_secret: KEYS.into(),
        key_rotation: Some(Duration::from_secs(720 * 3600)),
        key_prepublish: Duration::from_secs(1800),
        skew: Duration::from_secs(300),
        settings: Settings {
            token_endpoint: "http://tessera.test/oauth2/token".into(),
        },
        lease: None,
        concurrency: 8,
        debounce: Duration::from_millis(10),
    }
}

struct Env {
    cp: &'static ControlPlane,
    /// The test's own client (admin).
    client: kube::Client,
    /// The test's namespace: the operator watches it and keeps its key set there.
    ns: String,
    op: Operator,
}

impl Env {
    /// The object at `path` (`api/v1/secrets`, `apis/GROUP/VERSION/PLURAL`) named `name` in the
    /// test's namespace, as the API server has it.
    async fn object(&self, path: &str, name: &str) -> Option<Value> {
        get_object(&self.client, &self.ns, path, name).await
    }

    /// Every object at `path` in the test's namespace.
    async fn objects(&self, path: &str) -> Vec<Value> {
        self.objects_in(path, &self.ns).await
    }

    async fn objects_in(&self, path: &str, ns: &str) -> Vec<Value> {
        let (prefix, plural) = path.rsplit_once('/').expect("path");
        let url = format!("/{prefix}/namespaces/{ns}/{plural}");
        let req = http::Request::get(url).body(Vec::new()).expect("request");
        let list: Value = self.client.request(req).await.expect("list");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// The writes the operator made since `mark`, from the API server's audit log.
    async fn operator_writes_since(&self, mark: u64) -> Vec<tessera_control_plane::AuditEvent> {
        writes_since(self.cp, OPERATOR_USER, &self.ns, mark).await
    }
}

async fn get_object(client: &kube::Client, ns: &str, path: &str, name: &str) -> Option<Value> {
    let (prefix, plural) = path.rsplit_once('/').expect("path");
    let url = format!("/{prefix}/namespaces/{ns}/{plural}/{name}");
    let req = http::Request::get(url).body(Vec::new()).expect("request");
    match client.request::<Value>(req).await {
        Ok(v) => Some(v),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => panic!("GET {path} {name}: {e}"),
    }
}

/// The writes `user` made in `ns` since `mark`, from the API server's audit log (tests run in
/// parallel: each looks at its own namespace).
async fn writes_since(
    cp: &ControlPlane,
    user: &str,
    ns: &str,
    mark: u64,
) -> Vec<tessera_control_plane::AuditEvent> {
    // The audit log is written as requests complete: give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cp.audit_since(mark)
        .into_iter()
        .filter(|e| e.user == user && e.namespace == ns && e.is_write())
        .collect()
}

async fn env() -> Env {
    env_watching(0).await.0
}

/// An operator watching the test's namespace and `extra` more fresh namespaces (returned).
async fn env_watching(extra: usize) -> (Env, Vec<String>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "op").await;
    let mut others = Vec::new();
    for _ in 0..extra {
        others.push(cp.namespace(&client, "op-x").await);
    }
    let mut watched = vec![ns.clone()];
    watched.extend(others.iter().cloned());
    let op_client = cp.client_as(OPERATOR_USER, &["system:masters"]).await;
    let op = Operator::start(
        op_client,
        config(watched, &ns),
        Arc::new(Metrics::default()),
    );
    op.wait_synced().await;
    (Env { cp, client, ns, op }, others)
}

async fn create(client: &kube::Client, ns: &str, r: Resource) {
    let pp = PostParams::default();
    macro_rules! go {
        ($t:ty, $o:expr) => {{
            let mut o = $o;
            o.status = None;
            o.metadata.namespace = Some(ns.into());
            let name = o.metadata.name.clone().unwrap_or_default();
            Api::<$t>::namespaced(client.clone(), ns)
                .create(&pp, &o)
                .await
                .unwrap_or_else(|e| panic!("creating {ns}/{name}: {e}"))
                .metadata
        }};
    }
    match r {
        Resource::ApiProxy(o) => {
            go!(ApiProxy, o);
        }
        Resource::AuthPolicy(o) => {
            go!(AuthPolicy, o);
        }
        Resource::Credential(o) => {
            go!(Credential, o);
        }
        Resource::Role(o) => {
            go!(Role, o);
        }
        Resource::Secret(mut o) => {
            o.metadata.namespace = Some(ns.into());
            Api::<Secret>::namespaced(client.clone(), ns)
                .create(&pp, &o)
                .await
                .expect("create secret");
        }
        Resource::ConfigMap(mut o) => {
            o.metadata.namespace = Some(ns.into());
            Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns)
                .create(&pp, &o)
                .await
                .expect("create cm");
        }
    }
}

async fn apply_yaml(env: &Env, yaml: &str) {
    for r in parse(yaml, "test.yaml").expect("parse").resources {
        create(&env.client, &env.ns, r).await;
    }
}

/// Polls the operator's caches until `f` holds (the watch has delivered what a test wrote).
async fn until(env: &Env, what: &str, f: impl Fn(&tessera_operator::plan::World) -> bool) {
    for _ in 0..250 {
        if f(&env.op.world()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let w = env.op.world();
    panic!(
        "caches never showed: {what} (they hold {} credentials, {} proxies, {} policies, {} roles, {} secrets)",
        w.set.credentials.len(),
        w.set.api_proxies.len(),
        w.set.auth_policies.len(),
        w.set.roles.len(),
        w.set.secrets.len()
    );
}

fn ready(obj: &Value) -> (String, String) {
    let c = obj["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or("").into(),
        c["reason"].as_str().unwrap_or("").into(),
    )
}

fn secret_data(s: &Value, key: &str) -> String {
    let b = s["data"][key].as_str().unwrap_or_default();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b)
            .unwrap_or_default(),
    )
    .unwrap_or_default()
}

const GENERATED: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: acl}
spec: {tokenType: JWT, management: ACL, grantTypes: [client_credentials]}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: orders}
spec: {audience: "https://orders", basePath: /orders}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: app}
spec: {policyRef: {name: acl}, acl: [orders], secretTemplate: {labels: {team: payments}}}
"#;

#[tokio::test]
async fn create_generates_secret_client_id_verifier_keys_and_ready_then_steady_state_writes_nothing()
 {
    let env = env().await;
    apply_yaml(&env, GENERATED).await;
    until(&env, "3 objects", |w| {
        w.set.credentials.len() == 1
            && w.set.api_proxies.len() == 1
            && w.set.auth_policies.len() == 1
    })
    .await;
    let r = env.op.pass().await;
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.keys, "created");

    let keys = env
        .object(SECRETS, "tessera-keys")
        .await
        .expect("keys Secret");
    let keyset: Value =
        serde_json::from_str(&secret_data(&keys, "keyset.json")).expect("keyset json");
    assert_eq!(keyset["signing"].as_array().map(Vec::len), Some(3));

    let cred = env.object(CREDS, "app").await.expect("cred");
    assert_eq!(ready(&cred), ("True".into(), "Resolved".into()), "{cred}");
    let client_id = cred["status"]["clientId"]
        .as_str()
        .expect("clientId")
        .to_owned();
    assert!(client_id.starts_with("app-"), "{client_id}");
    assert_eq!(cred["status"]["observedGeneration"], 1);
    let secret = env
        .object(SECRETS, "app-client")
        .await
        .expect("generated Secret");
    assert_eq!(secret_data(&secret, "client_id"), client_id);
    assert_eq!(
        secret_data(&secret, "token_endpoint"),
        "http://tessera.test/oauth2/token"
    );
    let value = secret_data(&secret, "client_secret");
    assert_eq!(value.len(), 43, "256 bits, base64url");
    assert_eq!(secret["metadata"]["labels"]["team"], "payments");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        cred["metadata"]["uid"]
    );

    // The published verifier is the keyed hash of the generated secret under the key set's key.
    let vk = base64::engine::general_purpose::STANDARD
        .decode(keyset["verifierKey"].as_str().expect("vk"))
        .expect("b64");
    let binding = format!("uid:{}", cred["metadata"]["uid"].as_str().expect("uid"));
    let expected = tessera_crds::secret::VerifierKey::new(vk)
        .verifier(&binding, value.as_bytes())
        .to_published();
    assert_eq!(
        cred["status"]["secretVerifiers"],
        json!([{"verifier": expected}])
    );
    // The token server's model authenticates the client with that secret and no Secret read.
    let mut set = env.op.world().set;
    set.secrets.clear();
    let snap = tessera_crds::model::resolve(
        &set,
        &tessera_crds::secret::VerifierKey::new(
            base64::engine::general_purpose::STANDARD
                .decode(keyset["verifierKey"].as_str().expect("vk"))
                .expect("b64"),
        ),
        jiff::Timestamp::now(),
    );
    let c = snap.client(&client_id).expect("served client");
    assert!(
        c.check_secret(
            &tessera_crds::secret::VerifierKey::new(
                base64::engine::general_purpose::STANDARD
                    .decode(keyset["verifierKey"].as_str().expect("vk"))
                    .expect("b64")
            ),
            value.as_bytes(),
            jiff::Timestamp::now()
        )
    );

    let events = env.objects(EVENTS).await;
    assert!(
        events.iter().any(|e| e["reason"] == "SecretGenerated"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["reason"] == "Ready"));

    // Steady state: no writes at all, as the API server's audit log records it.
    let mark = env.cp.audit_mark();
    let again = env.op.pass().await;
    assert_eq!((again.writes, again.errors), (0, 0), "{again:?}");
    let writes = env.operator_writes_since(mark).await;
    assert!(writes.is_empty(), "writes in steady state: {writes:#?}");
}

#[tokio::test]
async fn missing_references_are_reported_and_the_others_are_unaffected() {
    let env = env().await;
    apply_yaml(&env, GENERATED).await;
    apply_yaml(
        &env,
        r#"
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: lost}
spec: {policyRef: {name: nope}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: partial}
spec: {policyRef: {name: acl}, acl: [orders, ghost], roles: [ghost-role]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: byref}
spec: {policyRef: {name: acl}, secretRef: {name: not-there}}
"#,
    )
    .await;
    until(&env, "4 credentials", |w| w.set.credentials.len() == 4).await;
    let r = env.op.pass().await;
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(
        ready(&env.object(CREDS, "lost").await.expect("o")),
        ("False".into(), "PolicyNotFound".into())
    );
    let partial = env.object(CREDS, "partial").await.expect("o");
    assert_eq!(ready(&partial), ("False".into(), "ProxyNotFound".into()));
    let msg = partial["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("ghost-role") && msg.contains("spec.acl[1]"),
        "{msg}"
    );
    assert_eq!(
        ready(&env.object(CREDS, "byref").await.expect("o")),
        ("False".into(), "SecretNotFound".into())
    );
    assert!(
        env.object(SECRETS, "not-there").await.is_none(),
        "a missing referenced Secret is never invented"
    );
    assert_eq!(
        ready(&env.object(CREDS, "app").await.expect("o")),
        ("True".into(), "Resolved".into())
    );

    // The referenced Secret appears: its verifier is published and the Credential is Ready.
    apply_yaml(&env, "apiVersion: v1\nkind: Secret\nmetadata: {name: not-there}\nstringData: {client_secret: user-chosen-secret}\n").await;
    until(&env, "user secret", |w| {
        w.set
            .secrets
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("not-there"))
    })
    .await;
    env.op.pass().await;
    let byref = env.object(CREDS, "byref").await.expect("o");
    assert_eq!(ready(&byref), ("True".into(), "Resolved".into()));
    let v1 = byref["status"]["secretVerifiers"][0]["verifier"].clone();
    // An edit to the user's Secret takes effect.
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .patch(
            "not-there",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"client_secret": "edited"}})),
        )
        .await
        .expect("edit");
    until(&env, "edited secret", |w| {
        w.set.secrets.iter().any(|s| {
            s.metadata.name.as_deref() == Some("not-there")
                && s.metadata.resource_version.as_deref()
                    != byref["metadata"]["resourceVersion"].as_str()
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    env.op.pass().await;
    let v2 =
        env.object(CREDS, "byref").await.expect("o")["status"]["secretVerifiers"][0]["verifier"]
            .clone();
    assert_ne!(v1, v2, "the edited secret has a new verifier");
}

#[tokio::test]
async fn a_foreign_secret_with_the_generated_name_is_never_overwritten() {
    let env = env().await;
    apply_yaml(&env, "apiVersion: v1\nkind: Secret\nmetadata: {name: app-client}\nstringData: {client_secret: not-ours, other: data}\n").await;
    apply_yaml(&env, GENERATED).await;
    until(&env, "objects", |w| {
        w.set.credentials.len() == 1 && !w.set.secrets.is_empty()
    })
    .await;
    let before = env.object(SECRETS, "app-client").await.expect("s");
    let r = env.op.pass().await;
    assert_eq!(r.errors, 0, "{r:?}");
    let cred = env.object(CREDS, "app").await.expect("o");
    assert_eq!(ready(&cred), ("False".into(), "SecretConflict".into()));
    assert!(
        cred["status"].get("secretVerifiers").is_none(),
        "the foreign value must not authenticate: {cred}"
    );
    assert_eq!(
        env.object(SECRETS, "app-client").await.expect("s"),
        before,
        "untouched"
    );
    let events = env.objects(EVENTS).await;
    assert!(
        events.iter().any(|e| e["reason"] == "SecretConflict"),
        "{events:?}"
    );
}

#[tokio::test]
async fn deleted_or_corrupted_generated_secrets_are_repaired_with_a_grace_period() {
    let env = env().await;
    apply_yaml(&env, GENERATED).await;
    until(&env, "objects", |w| w.set.credentials.len() == 1).await;
    env.op.pass().await;
    let first = secret_data(
        &env.object(SECRETS, "app-client").await.expect("s"),
        "client_secret",
    );
    let v_first =
        env.object(CREDS, "app").await.expect("c")["status"]["secretVerifiers"][0]["verifier"]
            .clone();

    // Corrupt: the value is replaced by garbage.
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .patch(
            "app-client",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"client_secret": "oops"}})),
        )
        .await
        .expect("corrupt");
    until(&env, "corrupted", |w| {
        w.set.secrets.iter().any(|s| {
            s.metadata.name.as_deref() == Some("app-client")
                && tessera_operator::plan::read_secret_value(s, "client_secret").as_deref()
                    == Some(b"oops".as_slice())
        })
    })
    .await;
    let r = env.op.pass().await;
    assert_eq!(r.errors, 0, "{r:?}");
    let repaired = secret_data(
        &env.object(SECRETS, "app-client").await.expect("s"),
        "client_secret",
    );
    assert_eq!(repaired.len(), 43);
    assert_ne!(repaired, first);
    let cred = env.object(CREDS, "app").await.expect("c");
    let vs = cred["status"]["secretVerifiers"]
        .as_array()
        .expect("verifiers")
        .clone();
    assert_eq!(vs.len(), 2, "new + previous in grace: {vs:?}");
    assert_eq!(vs[1]["verifier"], v_first);
    assert!(vs[1]["notAfter"].is_string());
    let events = env.objects(EVENTS).await;
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "SecretRepaired" && e["type"] == "Warning"),
        "{events:?}"
    );

    // Deleted: recreated, and the event says it was a repair.
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .delete("app-client", &DeleteParams::default())
        .await
        .expect("delete");
    until(&env, "deleted", |w| {
        !w.set
            .secrets
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("app-client"))
    })
    .await;
    env.op.pass().await;
    let again = secret_data(
        &env.object(SECRETS, "app-client").await.expect("recreated"),
        "client_secret",
    );
    assert_eq!(again.len(), 43);
    assert_ne!(again, repaired);
    // Labels stripped by hand come back without changing the secret.
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .patch(
            "app-client",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
        )
        .await
        .expect("strip label");
    until(&env, "label gone", |w| {
        w.set.secrets.iter().any(|s| {
            s.metadata.name.as_deref() == Some("app-client")
                && s.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| !l.contains_key("team"))
        })
    })
    .await;
    env.op.pass().await;
    let s = env.object(SECRETS, "app-client").await.expect("s");
    assert_eq!(s["metadata"]["labels"]["team"], "payments");
    assert_eq!(secret_data(&s, "client_secret"), again);
}

#[tokio::test]
async fn rotation_on_demand_keeps_the_old_secret_for_the_grace_period() {
    let env = env().await;
    apply_yaml(&env, GENERATED).await;
    until(&env, "objects", |w| w.set.credentials.len() == 1).await;
    env.op.pass().await;
    let old = secret_data(
        &env.object(SECRETS, "app-client").await.expect("s"),
        "client_secret",
    );
    Api::<Credential>::namespaced(env.client.clone(), &env.ns)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tessera.dev/rotate-secret": "2026-11-22-1"}}}),
            ),
        )
        .await
        .expect("annotate");
    until(&env, "annotation", |w| {
        w.set.credentials.iter().any(|c| {
            c.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("tessera.dev/rotate-secret"))
        })
    })
    .await;
    let r = env.op.pass().await;
    assert_eq!(r.errors, 0, "{r:?}");
    let s = env.object(SECRETS, "app-client").await.expect("s");
    let new = secret_data(&s, "client_secret");
    assert_ne!(new, old);
    assert_eq!(
        s["metadata"]["annotations"]["tessera.dev/rotation-request"],
        "2026-11-22-1"
    );
    let cred = env.object(CREDS, "app").await.expect("c");
    let vs = cred["status"]["secretVerifiers"]
        .as_array()
        .expect("v")
        .clone();
    assert_eq!(vs.len(), 2);
    assert!(vs[0].get("notAfter").is_none() && vs[1]["notAfter"].is_string());
    // The same request is not fulfilled twice.
    let r = env.op.pass().await;
    assert_eq!(r.writes, 0, "{r:?}");
}

#[tokio::test]
async fn deletion_garbage_collects_the_secret_unless_orphaned() {
    let env = env().await;
    apply_yaml(&env, GENERATED).await;
    apply_yaml(&env, "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: keep}\nspec: {policyRef: {name: acl}, deletionPolicy: Orphan}\n").await;
    until(&env, "objects", |w| w.set.credentials.len() == 2).await;
    env.op.pass().await;
    let kept = env
        .object(SECRETS, "keep-client")
        .await
        .expect("orphanable secret");
    assert!(
        kept["metadata"]
            .get("ownerReferences")
            .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty)),
        "{kept}"
    );
    let creds = Api::<Credential>::namespaced(env.client.clone(), &env.ns);
    creds
        .delete("app", &DeleteParams::default())
        .await
        .expect("delete");
    creds
        .delete("keep", &DeleteParams::default())
        .await
        .expect("delete");
    // The real garbage collector removes the owned Secret, asynchronously.
    for _ in 0..300 {
        if env.object(SECRETS, "app-client").await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        env.object(SECRETS, "app-client").await.is_none(),
        "owned Secret collected by the garbage collector"
    );
    assert!(
        env.object(SECRETS, "keep-client").await.is_some(),
        "Orphan keeps it"
    );
    until(&env, "gone", |w| w.set.credentials.is_empty()).await;
    let r = env.op.pass().await;
    assert_eq!(r.errors, 0);
}

#[tokio::test]
async fn a_role_change_updates_status_and_a_spec_change_moves_observed_generation() {
    let env = env().await;
    apply_yaml(&env, GENERATED).await;
    apply_yaml(&env, "apiVersion: tessera.dev/v1alpha1\nkind: Role\nmetadata: {name: r}\nspec: {apiProxies: [orders, missing]}\n").await;
    until(&env, "objects", |w| {
        w.set.roles.len() == 1 && w.set.credentials.len() == 1
    })
    .await;
    env.op.pass().await;
    let role = env
        .object("apis/tessera.dev/v1alpha1/roles", "r")
        .await
        .expect("role");
    assert_eq!(ready(&role).0, "False");
    assert_eq!(role["status"]["scope"], "r");
    Api::<Credential>::namespaced(env.client.clone(), &env.ns)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"roles": ["r"]}})),
        )
        .await
        .expect("edit");
    until(&env, "gen 2", |w| {
        w.set
            .credentials
            .iter()
            .any(|c| c.metadata.generation == Some(2))
    })
    .await;
    env.op.pass().await;
    let cred = env.object(CREDS, "app").await.expect("c");
    assert_eq!(cred["status"]["observedGeneration"], 2);
    let t1 = cred["status"]["conditions"][0]["lastTransitionTime"].clone();
    // Nothing changes: lastTransitionTime is kept, nothing written.
    let r = env.op.pass().await;
    assert_eq!(r.writes, 0);
    assert_eq!(
        env.object(CREDS, "app").await.expect("c")["status"]["conditions"][0]["lastTransitionTime"],
        t1
    );
}

#[tokio::test]
async fn a_malformed_keys_secret_is_reported_and_never_replaced() {
    let env = env().await;
    apply_yaml(&env, "apiVersion: v1\nkind: Secret\nmetadata: {name: tessera-keys}\nstringData: {keyset.json: '{\"version\": 1, \"signing\": []'}\n").await;
    apply_yaml(&env, GENERATED).await;
    until(&env, "objects", |w| w.set.credentials.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = env.object(SECRETS, "tessera-keys").await.expect("keys");
    let r = env.op.pass().await;
    assert!(r.keys.contains("not valid JSON"), "{r:?}");
    assert_eq!(r.writes, 0);
    assert_eq!(
        env.object(SECRETS, "tessera-keys").await.expect("keys"),
        before
    );
    assert!(
        env.object(SECRETS, "app-client").await.is_none(),
        "nothing reconciled without a trusted key"
    );
    let h = env.op.health();
    assert!(h.lock().expect("h").keys.contains("not valid JSON"));
}

/// The operator's view of the key set is stale (its watch is cut, as during an API outage)
/// while another writer changes the Secret and a rotation falls due: its write conflicts, it
/// re-reads the Secret from the API and rotates from that, once, in the same pass (issue 20:
/// it used to retry against the stale cache until its watch resumed).
#[tokio::test]
async fn a_key_set_write_on_a_stale_cache_conflicts_re_reads_and_rotates_once() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "op-stale").await;
    let proxy = tessera_control_plane::Proxy::start(cp.address()).await;
    let op_client = tessera_control_plane::client_from_yaml(&cp.kubeconfig_yaml_via(
        &proxy,
        OPERATOR_USER,
        &["system:masters"],
    ))
    .await;
    let mut cfg = config(vec![ns.clone()], &ns);
    cfg.key_rotation = Some(Duration::from_secs(4));
    cfg.key_prepublish = Duration::from_secs(1);
    let op = Operator::start(op_client, cfg, Arc::new(Metrics::default()));
    op.wait_synced().await;
    assert_eq!(op.pass().await.keys, "created");
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let keyset = async || -> Value {
        let s = api.get(KEYS).await.expect("keys");
        serde_json::from_slice(&s.data.expect("data")["keyset.json"].0).expect("json")
    };
    let signing = |k: &Value| k["signing"].as_array().map_or(0, Vec::len);
    let first = keyset().await;
    assert_eq!(signing(&first), 3);
    // Wait until the operator's cache has the Secret it wrote, then cut its watch.
    for _ in 0..100 {
        if op.pass().await.keys == "unchanged" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set_down(true);
    // Another writer changes the Secret meanwhile: the operator's copy is now stale.
    api.patch(
        KEYS,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched-by": "someone-else"}}})),
    )
    .await
    .expect("another writer");
    // The rotation falls due (4 s interval, 1 s prepublication).
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.set_down(false);
    let mark = cp.audit_mark();
    let r = op.pass().await;
    assert_eq!(r.errors, 0, "{r:?}");
    assert!(r.keys.contains("added"), "rotated in the same pass: {r:?}");
    let writes: Vec<_> = {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cp.audit_since(mark)
            .into_iter()
            .filter(|e| {
                e.user == OPERATOR_USER
                    && e.namespace == ns
                    && e.resource == "secrets"
                    && e.name == KEYS
            })
            .map(|e| (e.verb, e.code))
            .collect()
    };
    assert_eq!(
        writes,
        [
            ("update".to_owned(), 409),
            ("get".to_owned(), 200),
            ("update".to_owned(), 200)
        ],
        "a stale write, a re-read, one successful write"
    );
    // One new key per algorithm, not two.
    assert_eq!(signing(&keyset().await), 6);
}

#[tokio::test]
async fn every_example_reconciles_to_ready() {
    const FOLDERS: usize = 10;
    let (env, namespaces) = env_watching(FOLDERS).await;
    let (mut n, mut secrets) = (0, 0);
    for (folder, example_ns) in [
        "quickstart",
        "client-credentials-jwt",
        "policy-managed-proxy",
        "password-grant",
        "refresh-tokens",
        "scopes-from-roles",
        "custom-claims",
        "opaque-introspection",
        "mtls-bound",
        "legacy-gateway-compat",
    ]
    .into_iter()
    .zip(&namespaces)
    {
        // Each example in its own namespace, as a user would apply it.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(folder);
        for f in std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        {
            for mut r in parse(&std::fs::read_to_string(&f).expect("read"), "x")
                .expect("parse")
                .resources
            {
                let meta = match &mut r {
                    Resource::ApiProxy(o) => &mut o.metadata,
                    Resource::AuthPolicy(o) => &mut o.metadata,
                    Resource::Credential(o) => {
                        n += 1;
                        &mut o.metadata
                    }
                    Resource::Role(o) => &mut o.metadata,
                    Resource::Secret(o) => {
                        secrets += 1;
                        &mut o.metadata
                    }
                    Resource::ConfigMap(o) => &mut o.metadata,
                };
                meta.namespace = Some(example_ns.clone());
                create(&env.client, example_ns, r).await;
            }
        }
    }
    until(&env, "all credentials and secrets", |w| {
        w.set.credentials.len() == n && w.set.secrets.len() >= secrets
    })
    .await;
    let r = env.op.pass().await;
    assert_eq!(r.errors, 0, "{r:?}");
    let mut not_ready = Vec::new();
    for col in ["credentials", "apiproxies", "authpolicies", "roles"] {
        let path = format!("apis/tessera.dev/v1alpha1/{col}");
        let mut all = Vec::new();
        for ns in &namespaces {
            all.extend(env.objects_in(&path, ns).await);
        }
        for o in all {
            if ready(&o).0 != "True" {
                not_ready.push(format!(
                    "{col} {}/{}: {:?}",
                    o["metadata"]["namespace"], o["metadata"]["name"], o["status"]["conditions"]
                ));
            }
        }
    }
    assert!(not_ready.is_empty(), "{not_ready:#?}");
    let r = env.op.pass().await;
    assert_eq!(r.writes, 0, "steady state after the examples");
}

fn lease_cfg(ns: &str, identity: &str) -> tessera_operator::lease::LeaseConfig {
    tessera_operator::lease::LeaseConfig {
        namespace: ns.into(),
        name: "tessera-operator".into(),
        identity: identity.into(),
        duration: Duration::from_secs(2),
        retry_period: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn leader_hand_over_never_has_two_leaders_and_a_standby_takes_over_within_the_lease() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "op-lease").await;
    let api = || Api::namespaced(client.clone(), &ns);
    let (a_tx, a) = tessera_operator::lease::leadership();
    let (b_tx, b) = tessera_operator::lease::leadership();
    let (stop_a_tx, stop_a) = tokio::sync::watch::channel(false);
    let (_stop_b_tx, stop_b) = tokio::sync::watch::channel(false);
    let task_a = tokio::spawn(tessera_operator::lease::run(
        api(),
        lease_cfg(&ns, "a"),
        a_tx,
        stop_a,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _task_b = tokio::spawn(tessera_operator::lease::run(
        api(),
        lease_cfg(&ns, "b"),
        b_tx,
        stop_b,
    ));
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!(a.leads() && b.leads()), "two leaders");
    }
    assert!(a.leads() && !b.leads(), "a leads, b follows");

    // a dies without releasing (killed): b takes over once the lease expires.
    task_a.abort();
    drop(stop_a_tx);
    let died = std::time::Instant::now();
    // a's own leadership lapses at its renew deadline, before b can take over: never two.
    while !b.leads() {
        assert!(!(a.leads() && b.leads()), "two leaders");
        assert!(died.elapsed() < Duration::from_secs(4), "b never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = died.elapsed();
    assert!(!a.leads(), "a's leadership lapsed before b's began");
    assert!(
        took <= Duration::from_millis(2600),
        "took {took:?}, lease is 2s"
    );
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("tessera-operator")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));

    // A graceful shutdown releases at once: c takes over without waiting for expiry.
    let (c_tx, c) = tessera_operator::lease::leadership();
    let (_stop_c_tx, stop_c) = tokio::sync::watch::channel(false);
    let _task_c = tokio::spawn(tessera_operator::lease::run(
        api(),
        lease_cfg(&ns, "c"),
        c_tx,
        stop_c,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!c.leads());
    _stop_b_tx.send(true).expect("stop b");
    let released = std::time::Instant::now();
    while !c.leads() {
        assert!(
            released.elapsed() < Duration::from_secs(2),
            "c never took over after release"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!b.leads());
}

#[tokio::test]
async fn a_follower_keeps_its_caches_warm_and_writes_nothing_until_it_leads() {
    let env = env().await;
    let (leader_tx, leader) = tessera_operator::lease::leadership();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let health = env.op.health();
    let mark = env.cp.audit_mark();
    apply_yaml(&env, GENERATED).await;
    let Env { cp, client, ns, op } = env;
    let run = tokio::spawn(op.run(leader, stop));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let follower_writes = writes_since(cp, OPERATOR_USER, &ns, mark).await;
    assert!(
        follower_writes.is_empty(),
        "a follower wrote: {follower_writes:#?}"
    );
    assert!(
        get_object(&client, &ns, SECRETS, "app-client")
            .await
            .is_none()
    );
    assert!(get_object(&client, &ns, SECRETS, KEYS).await.is_none());
    assert!(health.lock().expect("h").synced);
    leader_tx.send_replace(Some(tokio::time::Instant::now() + Duration::from_secs(60)));
    let start = std::time::Instant::now();
    while get_object(&client, &ns, CREDS, "app")
        .await
        .is_none_or(|c| ready(&c).0 != "True")
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the new leader never reconciled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        get_object(&client, &ns, SECRETS, "app-client")
            .await
            .is_some()
    );
    run.abort();
}

/// Server-side apply with more than one field manager: a label a user adds to a generated
/// Secret is theirs, and the operator's applies (a repair of its own label, a rotation) keep it.
#[tokio::test]
async fn a_label_a_user_adds_to_a_generated_secret_survives_reconciles() {
    let env = env().await;
    apply_yaml(&env, GENERATED).await;
    until(&env, "objects", |w| w.set.credentials.len() == 1).await;
    env.op.pass().await;
    let api = Api::<Secret>::namespaced(env.client.clone(), &env.ns);
    api.patch(
        "app-client",
        &PatchParams::apply("someone-else"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-client", "labels": {"owner-team": "payments"}}})),
    )
    .await
    .expect("a user's apply");
    // The operator's own label stripped and a rotation requested: two applies of the Secret.
    api.patch(
        "app-client",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
    )
    .await
    .expect("strip");
    Api::<Credential>::namespaced(env.client.clone(), &env.ns)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tessera.dev/rotate-secret": "r1"}}}),
            ),
        )
        .await
        .expect("annotate");
    until(&env, "the edits", |w| {
        w.set.credentials.iter().any(|c| {
            c.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("tessera.dev/rotate-secret"))
        }) && w.set.secrets.iter().any(|s| {
            s.metadata
                .labels
                .as_ref()
                .is_some_and(|l| !l.contains_key("team"))
        })
    })
    .await;
    let r = env.op.pass().await;
    assert_eq!(r.errors, 0, "{r:?}");
    let s = env.object(SECRETS, "app-client").await.expect("secret");
    assert_eq!(s["metadata"]["labels"]["team"], "payments", "repaired");
    assert_eq!(
        s["metadata"]["labels"]["owner-team"], "payments",
        "the user's label survives: {}",
        s["metadata"]
    );
    let managers: Vec<&str> = s["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"tessera-operator") && managers.contains(&"someone-else"),
        "{managers:?}"
    );
}

/// A namespace deleted with Credentials in it: the namespace controller removes their generated
/// Secrets while the Credentials still exist, and the API server refuses new content there. The
/// operator must not re-create the Secrets at full speed (issue 20: 26,422 refused writes in
/// 40 s for 10,000 Credentials); it stops writing to that namespace after its first refusal.
#[tokio::test]
async fn a_deleted_namespace_is_not_repaired_at_full_speed() {
    const N: usize = 60;
    // The key set stays in the test's namespace; the Credentials go in one that is deleted.
    let (env, others) = env_watching(1).await;
    let doomed = &others[0];
    let mut yaml = GENERATED.to_owned();
    for i in 0..N {
        yaml.push_str(&format!("---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: c{i}}}\nspec: {{policyRef: {{name: acl}}}}\n"));
    }
    for r in parse(&yaml, "doomed.yaml").expect("parse").resources {
        create(&env.client, doomed, r).await;
    }
    until(&env, "all credentials", |w| {
        w.set.credentials.len() == N + 1
    })
    .await;
    let r = env.op.pass().await;
    assert_eq!(r.errors, 0, "{r:?}");
    let mark = env.cp.audit_mark();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .delete(doomed, &DeleteParams::default())
        .await
        .expect("delete namespace");
    // Passes back to back while the namespace goes, as the watch events would trigger them.
    let start = std::time::Instant::now();
    let mut passes = 0;
    while start.elapsed() < Duration::from_secs(8) {
        env.op.pass().await;
        passes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes = writes_since(env.cp, OPERATOR_USER, doomed, mark).await;
    let refused = writes.iter().filter(|w| w.code == 403).count();
    let mut per_object = std::collections::BTreeMap::<&str, usize>::new();
    for w in &writes {
        *per_object.entry(w.name.as_str()).or_default() += 1;
    }
    let most = per_object.values().copied().max().unwrap_or(0);
    let mut by_kind = std::collections::BTreeMap::<String, usize>::new();
    for w in &writes {
        *by_kind
            .entry(format!(
                "{} {}/{} {}",
                w.verb, w.resource, w.subresource, w.code
            ))
            .or_default() += 1;
    }
    eprintln!("namespace deletion: writes by kind {by_kind:?}");
    eprintln!(
        "namespace deletion: {passes} passes in 8 s, {} writes by the operator ({refused} refused as terminating), at most {most} per object",
        writes.len()
    );
    // Without the backoff every pass retried every object: {passes} × {N} writes. Now one batch
    // of concurrent creates (concurrency 8) meets the refusal and the namespace then waits;
    // an object whose write failed otherwise (a status patch to a Credential already gone:
    // 404) backs off exponentially (1 s, 2 s, 4 s: at most 4 tries in 8 s).
    assert!(refused <= 2 * 8, "{refused} creates refused as terminating");
    assert!(
        most <= 4,
        "an object was written {most} times in 8 s: {writes:#?}"
    );
}

/// A leader whose Lease lapsed (its renew deadline passed; the election has not said so yet)
/// writes nothing, neither the key set nor an object's Secret, status or Events: the Lease is
/// checked before each write, not once per pass.
#[tokio::test]
async fn a_lapsed_lease_stops_every_write_of_a_pass() {
    let mut env = env().await;
    let (lease, leadership) = tessera_operator::lease::leadership();
    let renew = || Some(tokio::time::Instant::now() + Duration::from_secs(60));
    lease.send_replace(renew());
    env.op.set_leadership(leadership);
    apply_yaml(&env, GENERATED).await;
    until(&env, "3 objects", |w| w.set.credentials.len() == 1).await;
    let r = env.op.pass().await;
    assert_eq!((r.errors, r.keys.as_str()), (0, "created"), "{r:?}");

    // A second Credential needs a Secret and a status; the lease lapses before the pass.
    apply_yaml(
        &env,
        "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: late}\nspec: {policyRef: {name: acl}, acl: [orders]}\n",
    )
    .await;
    until(&env, "the second Credential", |w| {
        w.set.credentials.len() == 2
    })
    .await;
    lease.send_replace(Some(tokio::time::Instant::now()));
    let mark = env.cp.audit_mark();
    let r = env.op.pass().await;
    assert!(r.errors > 0, "the writes were refused: {r:?}");
    let writes = env.operator_writes_since(mark).await;
    assert!(writes.is_empty(), "a lapsed leader wrote: {writes:#?}");
    assert!(env.object(SECRETS, "late-client").await.is_none());
    let last = env.op.health().lock().expect("h").last_error.clone();
    assert!(
        last.as_deref()
            .is_some_and(|e| e.contains("no longer holds the operator Lease")),
        "/readyz says why: {last:?}"
    );

    // Renewed: the same operator writes it at once (no backoff was charged to the object).
    lease.send_replace(renew());
    let r = env.op.pass().await;
    assert_eq!((r.errors, r.deferred), (0, 0), "{r:?}");
    assert!(env.object(SECRETS, "late-client").await.is_some());
}

/// A Credential bound to a ServiceAccount gets no generated Secret, shows the binding, and is
/// `ServiceAccountNotFound` until the ServiceAccount exists.
#[tokio::test]
async fn a_service_account_binding_needs_no_secret_and_reports_a_missing_account() {
    let env = env().await;
    apply_yaml(
        &env,
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: workloads}
spec: {clientAuthMethods: [private_key_jwt]}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: ledger}
spec: {audience: "https://ledger", basePath: /ledger}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: job}
spec: {policyRef: {name: workloads}, acl: [ledger], serviceAccount: {name: job-runner}}
"#,
    )
    .await;
    until(&env, "the Credential", |w| w.set.credentials.len() == 1).await;
    env.op.pass().await;
    env.op.pass().await;
    let c = env.object(CREDS, "job").await.expect("credential");
    assert_eq!(
        ready(&c),
        ("False".into(), "ServiceAccountNotFound".into()),
        "{c}"
    );
    assert_eq!(
        c["status"]["serviceAccount"],
        format!("{}/job-runner", env.ns)
    );
    assert!(
        env.object(SECRETS, "job-client").await.is_none(),
        "no secret for it"
    );
    let req = http::Request::post(format!("/api/v1/namespaces/{}/serviceaccounts", env.ns))
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "job-runner"}}))
                .expect("json"),
        )
        .expect("request");
    let _: Value = env
        .client
        .request(req)
        .await
        .expect("create ServiceAccount");
    let mut state = ready(&c);
    for _ in 0..100 {
        env.op.pass().await;
        state = ready(&env.object(CREDS, "job").await.expect("credential"));
        if state.0 == "True" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state.0, "True", "{state:?}");
    assert!(env.object(SECRETS, "job-client").await.is_none());
}
