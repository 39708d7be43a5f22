//! The shipped binary: the README's quickstart command, its tools, metrics and shutdown.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/server.rs"]
mod server;

use server::BIN;

/// Sends SIGTERM and waits (15 s at most) for the exit status.
async fn terminate(r: &mut server::Running) -> std::process::ExitStatus {
    let pid = r.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = r.child.try_wait().expect("wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_quickstart() -> server::Running {
    server::start(&[], Stdio::piped()).await
}

#[tokio::test]
async fn the_quickstart_serves_a_token_a_standard_validator_accepts_and_metrics_count_it() {
    let r = start_quickstart().await;
    let http = reqwest::Client::new();
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("demo-app:demo-secret-change-me")
    );
    let resp = http
        .post(r.api_url("/oauth2/token"))
        .header("authorization", basic)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    let token = body["access_token"].as_str().expect("token");
    let jwks: jsonwebtoken::jwk::JwkSet = http
        .get(r.api_url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let header = jsonwebtoken::decode_header(token).expect("header");
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(&header.kid.expect("kid")).expect("key"))
            .expect("decoding key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_issuer(&["http://localhost:8080"]);
    v.set_audience(&["https://api.example.com/orders"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .expect("valid")
        .claims;
    assert_eq!(
        (claims["client_id"].as_str(), claims["tenant"].as_str()),
        (Some("demo-app"), Some("acme"))
    );

    // A failed attempt, then the metrics.
    let _ = http
        .post(r.api_url("/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=demo-app&client_secret=x")
        .send()
        .await;
    let metrics = http
        .get(r.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        r#"tessera_requests_total{endpoint="/oauth2/token",grant="client_credentials",outcome="ok"} 1"#,
        r#"tessera_requests_total{endpoint="/oauth2/token",grant="client_credentials",outcome="invalid_client"} 1"#,
        r#"tessera_client_auth_total{method="client_secret_basic"} 1"#,
        r#"tessera_snapshot_objects{kind="Credential"} 1"#,
        "tessera_snapshot_generation 1",
        "tessera_reload_failures_total 0",
        r#"tessera_request_duration_seconds_count{endpoint="/oauth2/token"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    assert!(metrics.contains("tessera_snapshot_age_seconds"));
    assert!(!metrics.contains("demo-secret-change-me"));
    let ready: serde_json::Value = http
        .get(r.admin_url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            ready["ready"].as_bool(),
            ready["keys"]["ephemeral"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(
        http.get(r.admin_url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_the_missing_key_set_is_warned_about() {
    let mut r = start_quickstart().await;
    let status = terminate(&mut r).await;
    assert!(status.success(), "{status}");
    let mut err = String::new();
    std::io::Read::read_to_string(r.child.stderr.as_mut().expect("stderr"), &mut err)
        .expect("read");
    assert!(err.contains("NO KEY SET FOUND"), "{err}");
    assert!(err.contains("shutting down"), "{err}");
    assert!(!err.contains("demo-secret-change-me"), "no secret in logs");
}

#[test]
fn hash_password_prints_an_argon2id_hash_that_verifies() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"correct horse\n")
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).expect("utf-8");
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    use argon2::PasswordVerifier as _;
    let parsed = argon2::PasswordHash::new(hash).expect("PHC");
    assert!(
        argon2::Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok()
    );
    assert!(
        argon2::Argon2::default()
            .verify_password(b"correct horse\n", &parsed)
            .is_err(),
        "the newline is not part of it"
    );
    // An empty password is refused.
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    drop(child.stdin.take());
    assert!(!child.wait_with_output().expect("output").status.success());
}

#[test]
fn generate_keys_prints_a_key_set_secret_the_server_reads() {
    let out = Command::new(BIN)
        .args([
            "generate-keys",
            "--name",
            "tessera-keys",
            "--namespace",
            "tokens",
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let parsed = tessera_crds::manifest::parse(&text, "keys.yaml").expect("a valid manifest");
    let tessera_crds::manifest::Resource::Secret(secret) = &parsed.resources[0] else {
        panic!("a Secret")
    };
    assert_eq!(secret.metadata.namespace.as_deref(), Some("tokens"));
    let json = &secret.string_data.as_ref().expect("stringData")["keyset.json"];
    let keys = tessera_token_server::token::keys::KeySet::from_json(json.as_bytes())
        .expect("a key set the server reads");
    assert_eq!(keys.algorithms(jiff::Timestamp::now()).len(), 3);
}

#[test]
fn bad_command_lines_fail_with_a_message() {
    let out = Command::new(BIN)
        .args(["--source", "dir"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir"));
    let out = Command::new(BIN)
        .args([
            "--source",
            "dir",
            "--dir",
            "/nonexistent/folder",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a folder"));
    let out = Command::new(BIN)
        .args(["--listen", "not-an-address", "--dir", "."])
        .output()
        .expect("run");
    assert!(!out.status.success());
}

/// An acceptance-style run of the shipped binary with debug JSON logs and the audit trail in a
/// file: every secret, password and token it used is grepped for in every line of both.
#[tokio::test]
async fn a_full_run_leaves_no_secret_password_or_token_in_any_log_or_audit_line() {
    let dir = std::env::temp_dir().join(format!("tessera-grep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (audit, log) = (dir.join("audit.jsonl"), dir.join("stderr.log"));
    let stderr = std::fs::File::create(&log).expect("log file");
    let audit_flag = format!("--audit-log={}", audit.display());
    let r = server::start(
        &["--log-format=json", "--log=debug", &audit_flag],
        Stdio::from(stderr),
    )
    .await;
    let http = reqwest::Client::new();
    let post = |path: &str, form: &[(&str, &str)], auth: Option<(&str, &str)>| {
        let mut b = http.post(r.api_url(path)).form(form);
        if let Some((u, p)) = auth {
            b = b.basic_auth(u, Some(p));
        }
        b.send()
    };
    let (id, secret) = ("demo-app", "demo-secret-change-me");
    let (wrong, wrong_pw) = ("a-wrong-secret-1234", "a-wrong-password-5678");
    let mut used: Vec<String> = vec![
        secret.into(),
        wrong.into(),
        "alice-demo-password".into(),
        wrong_pw.into(),
    ];
    let json =
        |r: reqwest::Response| async move { r.json::<serde_json::Value>().await.expect("json") };
    // client_credentials with basic and with post; a wrong secret; a lockout.
    let t = json(
        post(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some((id, secret)),
        )
        .await
        .expect("cc"),
    )
    .await;
    used.push(t["access_token"].as_str().expect("token").into());
    let t = json(
        post(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            None,
        )
        .await
        .expect("cc post"),
    )
    .await;
    used.push(t["access_token"].as_str().expect("token").into());
    // password grant, a wrong password, refresh, introspection, revocation.
    let pw = |p: &'static str| {
        vec![
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", p),
            ("scope", "orders:read"),
        ]
    };
    let _ = post(
        "/credential/jwt",
        &pw("a-wrong-password-5678"),
        Some((id, secret)),
    )
    .await;
    let t = json(
        post(
            "/credential/jwt",
            &pw("alice-demo-password"),
            Some((id, secret)),
        )
        .await
        .expect("password"),
    )
    .await;
    let (access, refresh) = (
        t["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{t}"))
            .to_owned(),
        t["refresh_token"].as_str().expect("refresh").to_owned(),
    );
    used.push(access.clone());
    used.push(refresh.clone());
    let t = json(
        post(
            "/oauth2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            Some((id, secret)),
        )
        .await
        .expect("refresh"),
    )
    .await;
    used.push(t["refresh_token"].as_str().expect("rotated").into());
    let _ = post(
        "/oauth2/token",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        Some((id, secret)),
    )
    .await;
    let _ = post(
        "/oauth2/introspect",
        &[("token", &access)],
        Some((id, secret)),
    )
    .await;
    let _ = post("/oauth2/revoke", &[("token", &access)], Some((id, secret))).await;
    // A bearer token where a client secret belongs, and a malformed Basic header.
    let _ = http
        .post(r.api_url("/oauth2/token"))
        .bearer_auth(&access)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await;
    // Last, as it slows this source down: a guesser locked out.
    for _ in 0..12 {
        let _ = post(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            Some((id, wrong)),
        )
        .await;
    }
    // A clean stop writes what is queued.
    let mut r = r;
    assert!(terminate(&mut r).await.success());
    drop(r);
    let log_text = std::fs::read_to_string(&log).expect("log");
    let audit_text = std::fs::read_to_string(&audit).expect("audit");
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<&str> = log_text.lines().chain(audit_text.lines()).collect();
    assert!(
        audit_text.lines().count() >= 8,
        "the run was audited:\n{audit_text}"
    );
    for kind in [
        "token.issued",
        "client.authentication_failed",
        "lockout.started",
        "user.authentication_failed",
        "refresh.reuse_detected",
        "token.revoked",
        "keys.changed",
    ] {
        assert!(
            audit_text.contains(&format!("\"event\":\"{kind}\"")),
            "no {kind} in:\n{audit_text}"
        );
    }
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for s in &used {
            assert!(!line.contains(s.as_str()), "a secret or token in: {line}");
        }
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.contains("authorization") && !lower.contains("basic "),
            "a header in: {line}"
        );
    }
}
