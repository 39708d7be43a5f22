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
    let helm = tessera_control_plane::helm();
    let out = std::process::Command::new(&helm)
        .args(["install", "tessera"])
        .arg(root.join("charts/tessera"))
        .args(["--namespace", &sys, "--skip-crds", "--set"])
        .arg(format!("watchNamespaces={{{app}}}"))
        .arg("--kubeconfig")
        .arg(cluster.admin_kubeconfig())
        .output()
        .expect("helm");
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
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
    let tr: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).expect("tr");
    let token = Api::<ServiceAccount>::namespaced(cluster.admin.clone(), &sys)
        .create_token_request("tessera-operator", &PostParams::default(), &tr)
        .await
        .expect("TokenRequest")
        .status
        .and_then(|s| s.token)
        .expect("token");
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
