//! The shipped `operator run` binary against the real control plane: it connects with a kubeconfig,
//! takes the Lease, writes the key set and statuses, serves its admin endpoints, and releases the
//! Lease on SIGTERM.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use std::time::{Duration, Instant};
use tessera_control_plane::ControlPlane;

#[tokio::test]
async fn operator_run_reconciles_serves_health_and_releases_the_lease_on_sigterm() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = cp.namespace(&client, "op-bin").await;
    let kubeconfig = cp.kubeconfig_file(
        "operator-binary",
        "tessera-operator-binary",
        &["system:masters"],
    );
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    let holder = async || {
        leases
            .get("tessera-operator")
            .await
            .expect("lease")
            .spec
            .and_then(|s| s.holder_identity)
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_operator"))
        .args([
            "run",
            "--admin-listen",
            &format!("127.0.0.1:{port}"),
            "--identity",
            "op-1",
            "--lease-duration",
            "3s",
            "--namespace",
            &ns,
            "--namespaces",
            &ns,
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("POD_NAMESPACE")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    while secrets
        .get_opt("tessera-keys")
        .await
        .expect("get")
        .is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no key set written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(holder().await.as_deref(), Some("op-1"));
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["leader"], true, "{body}");
    assert_eq!(body["keys"], "ok", "{body}");
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("tessera_operator_leader 1"), "{metrics}");
    assert!(
        metrics
            .contains("tessera_operator_reconciles_total{kind=\"KeySet\",outcome=\"written\"} 1"),
        "{metrics}"
    );

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let start = Instant::now();
    let code = loop {
        if let Some(code) = child.try_wait().expect("wait") {
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "{code:?}");
    assert_eq!(holder().await, None, "released on SIGTERM");
}

#[test]
fn bad_flags_name_the_flag_and_the_fix() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_operator"))
        .args(["run", "--key-rotation", "30 days"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--key-rotation") && err.contains("720h"),
        "{err}"
    );
}
