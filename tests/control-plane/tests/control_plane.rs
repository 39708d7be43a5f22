//! The harness itself: the control plane starts, enforces RBAC, issues ServiceAccount tokens,
//! runs the garbage collector, and records requests in its audit log.

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use std::time::Duration;
use tessera_control_plane::{ADMIN, ControlPlane};

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out: {what}");
}

#[tokio::test]
async fn rbac_is_enforced_and_the_audit_log_names_the_user() {
    let cp = ControlPlane::shared();
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "cp-rbac").await;
    let nobody = cp.client_as("nobody", &[]).await;
    let mark = cp.audit_mark();
    let err = Api::<ConfigMap>::namespaced(nobody, &ns)
        .list(&Default::default())
        .await
        .expect_err("RBAC denies a user with no bindings");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm");
    Api::<ConfigMap>::namespaced(admin, &ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("admin creates");
    eventually("the audit log has both requests", async || {
        let ev = cp.audit_since(mark);
        ev.iter()
            .any(|e| e.user == "nobody" && e.verb == "list" && e.code == 403)
            && ev.iter().any(|e| {
                e.user == ADMIN
                    && e.verb == "create"
                    && e.resource == "configmaps"
                    && e.namespace == ns
            })
    })
    .await;
}

#[tokio::test]
async fn service_account_tokens_authenticate_and_the_garbage_collector_runs() {
    let cp = ControlPlane::shared();
    let admin = cp.client().await;
    let ns = cp.namespace(&admin, "cp-sa").await;
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "app"}})).expect("sa");
    let sas = Api::<ServiceAccount>::namespaced(admin.clone(), &ns);
    let created = sas.create(&PostParams::default(), &sa).await.expect("sa");
    let tr: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
            .expect("tr");
    let token = sas
        .create_token_request("app", &PostParams::default(), &tr)
        .await
        .expect("TokenRequest")
        .status
        .expect("status")
        .token
        .expect("token");
    let as_sa =
        tessera_control_plane::client_from_yaml(&cp.kubeconfig_yaml_with_token(&token)).await;
    let err = Api::<ConfigMap>::namespaced(as_sa, &ns)
        .list(&Default::default())
        .await
        .expect_err("no binding");
    assert!(
        err.to_string()
            .contains(&format!("system:serviceaccount:{ns}:app")),
        "the token authenticated as the ServiceAccount: {err}"
    );

    // An object owned by the ServiceAccount goes with it (the real garbage collector).
    let uid = created.metadata.uid.expect("uid");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owned",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ServiceAccount", "name": "app", "uid": uid}]}}))
    .expect("cm");
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("owned");
    sas.delete("app", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the owned ConfigMap is garbage-collected", async || {
        cms.get_opt("owned").await.is_ok_and(|c| c.is_none())
    })
    .await;
}

#[tokio::test]
async fn compaction_is_reachable() {
    let cp = ControlPlane::shared();
    let rev = cp.compact().await;
    assert!(rev > 1, "{rev}");
}
