//! The shipped `operator run` binary against the fake API server: it connects with a kubeconfig,
//! takes the Lease, writes the key set and statuses, serves its admin endpoints, and releases the
//! Lease on SIGTERM.

use std::time::{Duration, Instant};
use tessera_fake_apiserver::FakeApiServer;

#[tokio::test]
async fn operator_run_reconciles_serves_health_and_releases_the_lease_on_sigterm() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let fake = FakeApiServer::start().await.expect("fake");
    let dir = std::env::temp_dir().join(format!("tessera-op-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).expect("write");
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
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("POD_NAMESPACE")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while fake
        .object("api/v1/secrets", "tessera-system", "tessera-keys")
        .is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no key set written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lease = fake
        .object(
            "apis/coordination.k8s.io/v1/leases",
            "tessera-system",
            "tessera-operator",
        )
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "op-1");
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
    let lease = fake
        .object(
            "apis/coordination.k8s.io/v1/leases",
            "tessera-system",
            "tessera-operator",
        )
        .expect("lease");
    assert!(
        lease["spec"]
            .get("holderIdentity")
            .is_none_or(serde_json::Value::is_null),
        "released: {lease}"
    );
    let _ = std::fs::remove_dir_all(&dir);
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
