//! The chart's RBAC under the real authorizer: with one rule removed from the operator's Role,
//! the operator's refused write shows where a user looks (a Warning Event on the object, the
//! last error on `/readyz`), and the operator keeps running and reconciling everything else.

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::Role as RbacRole;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tessera_e2e::*;

/// Installs the chart (release `tessera`, CRDs already there) into `sys` with `extra` flags.
fn helm_install(cluster: &Cluster, sys: &str, extra: &[String]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(tessera_control_plane::helm())
        .args(["install", "tessera"])
        .arg(root.join("charts/tessera"))
        .args(["--namespace", sys, "--skip-crds"])
        // The binaries these tests run are single replicas on their own state.
        .args(["--set", "state.perReplica=true"])
        .args(extra)
        .arg("--kubeconfig")
        .arg(cluster.admin_kubeconfig())
        .output()
        .expect("helm");
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A token of the chart's operator ServiceAccount in `sys` (TokenRequest, as the kubelet gets).
async fn operator_token(cluster: &Cluster, sys: &str) -> String {
    let tr: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).expect("tr");
    Api::<ServiceAccount>::namespaced(cluster.admin.clone(), sys)
        .create_token_request("tessera-operator", &PostParams::default(), &tr)
        .await
        .expect("TokenRequest")
        .status
        .and_then(|s| s.token)
        .expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_rbac_rule_is_reported_on_the_object_and_in_readiness_not_a_crash_loop() {
    let cluster = Cluster::connect("rbac").await;
    let sys = cluster.namespace("sys").await;
    let app = cluster.namespace("app").await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    create_example(&cluster.admin, &app, &root.join("examples/quickstart")).await;
    let generated = "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: gen}\nspec: {policyRef: {name: default}}\n";
    for r in tessera_crds::manifest::parse(generated, "gen.yaml")
        .expect("parse")
        .resources
    {
        create(&cluster.admin, &app, r).await;
    }
    helm_install(
        &cluster,
        &sys,
        &["--set".into(), format!("watchNamespaces={{{app}}}")],
    );
    // Remove `create` on Secrets from the operator's Role in the app namespace.
    let roles = Api::<RbacRole>::namespaced(cluster.admin.clone(), &app);
    let mut removed = 0;
    for mut role in roles.list(&ListParams::default()).await.expect("roles") {
        let name = role.metadata.name.clone().unwrap_or_default();
        if !name.contains("operator") {
            continue;
        }
        for rule in role.rules.iter_mut().flatten() {
            let secrets = rule
                .resources
                .as_ref()
                .is_some_and(|r| r.iter().any(|x| x == "secrets"));
            if secrets && rule.verbs.iter().any(|v| v == "create") {
                rule.verbs.retain(|v| v != "create");
                removed += 1;
            }
        }
        role.metadata.managed_fields = None;
        roles
            .replace(&name, &PostParams::default(), &role)
            .await
            .expect("edit Role");
    }
    assert_eq!(
        removed, 1,
        "the operator's Role had one rule creating Secrets"
    );
    let token = operator_token(&cluster, &sys).await;
    let proxy = cluster.proxy().await;
    let kc = cluster.kubeconfig_for("operator", &proxy, Some(&token));
    let admin_port = free_port();
    let mut operator = spawn(
        &cluster,
        "operator",
        "operator",
        &kc,
        &[
            "run".into(),
            format!("--namespaces={app}"),
            format!("--namespace={sys}"),
            "--leader-election=false".into(),
            format!("--admin-listen=127.0.0.1:{admin_port}"),
        ],
    );
    let http = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{admin_port}/readyz");
    // The refusal is on the Credential, as a Warning Event naming the write and the fix.
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(cluster.admin.clone(), &app);
    let forbidden = eventually(
        Duration::from_secs(30),
        "a Forbidden Event on Credential gen",
        || {
            let events = events.clone();
            async move {
                events.list(&ListParams::default()).await.is_ok_and(|l| {
                    l.items.iter().any(|e| {
                        e.reason.as_deref() == Some("Forbidden")
                            && e.type_.as_deref() == Some("Warning")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("gen")
                            && e.note
                                .as_deref()
                                .is_some_and(|n| n.contains("forbidden") && n.contains("Role"))
                    })
                })
            }
        },
    )
    .await;
    eprintln!(
        "RBAC: the refused Secret create showed as a Forbidden Event after {} ms",
        forbidden.as_millis()
    );
    // Readiness reports it; the process keeps running; the other Credential is reconciled.
    eventually(
        Duration::from_secs(20),
        "readiness names the refusal",
        || {
            let (http, readyz) = (http.clone(), readyz.clone());
            async move {
                get_json(&http, &readyz).await.body["lastError"]
                    .as_str()
                    .is_some_and(|e| e.contains("forbidden"))
            }
        },
    )
    .await;
    let creds = Api::<tessera_crds::Credential>::namespaced(cluster.admin.clone(), &app);
    eventually(
        Duration::from_secs(20),
        "demo-app Ready despite the refusal",
        || {
            let creds = creds.clone();
            async move {
                creds.get("demo-app").await.ok().is_some_and(|c| {
                    serde_json::to_value(c.status).ok().is_some_and(|s: Value| {
                        s["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
                })
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        operator.0.try_wait().expect("wait").is_none(),
        "the operator is still running, not crash-looping"
    );
    assert_eq!(
        get_json(&http, &format!("http://127.0.0.1:{admin_port}/healthz"))
            .await
            .status,
        200
    );
    cluster.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_account_cannot_change_secrets_it_does_not_own_even_cluster_wide() {
    use k8s_openapi::api::core::v1::Secret;
    let cluster = Cluster::connect("owned").await;
    let sys = cluster.namespace("sys").await;
    let app = cluster.namespace("app").await;
    // The default: watchNamespaces empty, a ClusterRole that may write any Secret.
    helm_install(&cluster, &sys, &[]);
    let admin_secrets = Api::<Secret>::namespaced(cluster.admin.clone(), &app);
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db-password"},
        "stringData": {"password": "hunter2"},
    }))
    .expect("secret");
    admin_secrets
        .create(&PostParams::default(), &foreign)
        .await
        .expect("the user's Secret");
    let token = operator_token(&cluster, &sys).await;
    let proxy = cluster.proxy().await;
    let kc = cluster.kubeconfig_for("operator-sa", &proxy, Some(&token));
    let operator =
        tessera_control_plane::client_from_yaml(&std::fs::read_to_string(&kc).expect("kubeconfig"))
            .await;
    let secrets = Api::<Secret>::namespaced(operator, &app);
    // The API server loads a new policy asynchronously: wait until it refuses a probe.
    let took = eventually(
        Duration::from_secs(30),
        "the owned-Secrets policy is enforced",
        || {
            let secrets = secrets.clone();
            let admin_secrets = admin_secrets.clone();
            async move {
                let probe: Secret = serde_json::from_value(json!({
                    "metadata": {"generateName": "probe-"},
                    "stringData": {"x": "y"},
                }))
                .expect("secret");
                match secrets.create(&PostParams::default(), &probe).await {
                    Err(kube::Error::Api(e)) => e.message.contains("-owned-secrets"),
                    Ok(made) => {
                        let name = made.metadata.name.unwrap_or_default();
                        let _ = admin_secrets.delete(&name, &Default::default()).await;
                        false
                    }
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    eprintln!(
        "owned-Secrets policy enforced {} ms after install",
        took.as_millis()
    );
    // Reading is what RBAC grants (referenced Secrets, user pools, CA bundles)...
    let mut read = secrets
        .get("db-password")
        .await
        .expect("RBAC allows the read");
    // ...but changing, or deleting, a Secret it does not own is refused by the API server.
    read.string_data = Some([("password".to_owned(), "owned".to_owned())].into());
    read.metadata.managed_fields = None;
    let denied = |r: Result<Secret, kube::Error>, what: &str| match r {
        // An admission policy's denial is 422 Invalid, with its message.
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{what}: {e:?}");
            assert!(
                e.message.contains("managed-by=tessera-operator"),
                "{what}: {}",
                e.message
            );
        }
        other => panic!("{what} was not refused: {other:?}"),
    };
    denied(
        secrets
            .replace("db-password", &PostParams::default(), &read)
            .await,
        "replacing a foreign Secret",
    );
    // Claiming it by adding the label is an update of a foreign Secret too.
    let mut claimed = read.clone();
    claimed.metadata.labels = Some(
        [(
            "app.kubernetes.io/managed-by".to_owned(),
            "tessera-operator".to_owned(),
        )]
        .into(),
    );
    denied(
        secrets
            .replace("db-password", &PostParams::default(), &claimed)
            .await,
        "labelling a foreign Secret as its own",
    );
    let unlabelled: Secret = serde_json::from_value(json!({
        "metadata": {"name": "sneaky"},
        "stringData": {"x": "y"},
    }))
    .expect("secret");
    denied(
        secrets.create(&PostParams::default(), &unlabelled).await,
        "creating an unlabelled Secret",
    );
    match secrets
        .delete("db-password", &Default::default())
        .await
        .map(|_| ())
    {
        // RBAC grants no delete at all (403); the policy would refuse it too (422).
        Err(kube::Error::Api(e)) => assert!(matches!(e.code, 403 | 422), "delete: {e:?}"),
        other => panic!("deleting a foreign Secret was not refused: {other:?}"),
    }
    // Its own Secrets it writes as before.
    let own: Secret = serde_json::from_value(json!({
        "metadata": {"name": "gen-client", "labels": {"app.kubernetes.io/managed-by": "tessera-operator"}},
        "stringData": {"client_secret": "x"},
    }))
    .expect("secret");
    let mut created = secrets
        .create(&PostParams::default(), &own)
        .await
        .expect("a labelled Secret is allowed");
    created.string_data = Some([("client_secret".to_owned(), "y".to_owned())].into());
    created.metadata.managed_fields = None;
    secrets
        .replace("gen-client", &PostParams::default(), &created)
        .await
        .expect("updating its own Secret is allowed");
    assert_eq!(
        admin_secrets
            .get("db-password")
            .await
            .expect("still there")
            .data
            .and_then(|d| d.get("password").cloned())
            .map(|b| b.0),
        Some(b"hunter2".to_vec()),
        "the user's Secret is unchanged"
    );
    cluster.cleanup().await;
}
