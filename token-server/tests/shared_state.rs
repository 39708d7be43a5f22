//! One security state for every replica (`--state redis://…`): two shipped binaries on one folder
//! of manifests and one key set, sharing a real redis-server started here. Each test tries what
//! a second replica used to let through, and the faults: Redis killed under load and restarted,
//! a replica restarted.

#[path = "support/redis.rs"]
mod redis_server;
#[path = "support/server.rs"]
#[allow(dead_code)]
mod server;

use redis_server::Redis;
use serde_json::Value;
use server::{Running, start_in};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const MANIFESTS: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: refreshing}
spec:
  grantTypes: [client_credentials, refresh_token]
  refresh: {enabled: true, ttl: 12h, rotate: true}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: opaque}
spec:
  tokenType: OAuth2
  grantTypes: [client_credentials, refresh_token]
  refresh: {enabled: true, ttl: 12h, rotate: true}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: reports}
spec: {audience: "https://api.example.com/reports", basePath: /reports}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: runner}
spec: {clientId: runner, secretRef: {name: runner-secret}, policyRef: {name: refreshing}, acl: [reports]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: opaque-runner}
spec: {clientId: opaque-runner, secretRef: {name: opaque-secret}, policyRef: {name: opaque}, acl: [reports]}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: limited}
spec:
  rateLimit: {requestsPerSecond: 1, burst: 3}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: limited-app}
spec: {clientId: limited-app, secretRef: {name: runner-secret}, policyRef: {name: limited}, acl: [reports]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: quota-app}
spec:
  clientId: quota-app
  secretRef: {name: runner-secret}
  policyRef: {name: limited}
  acl: [reports]
  rateLimit: {requestsPerSecond: 1000}
  quota: {tokensPerDay: 2}
---
apiVersion: v1
kind: Secret
metadata: {name: runner-secret}
stringData: {client_secret: runner-test-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: opaque-secret}
stringData: {client_secret: opaque-test-secret}
"#;

/// A folder with the manifests above and one key set, so every replica opens every token.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-shared-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("resources.yaml"), MANIFESTS).expect("write");
    let keys = std::process::Command::new(server::BIN)
        .arg("generate-keys")
        .output()
        .expect("generate-keys");
    assert!(keys.status.success());
    std::fs::write(dir.join("keys.yaml"), keys.stdout).expect("write keys");
    dir
}

/// A replica on `dir` sharing `redis`, with the guessing limits of `extra` (default: none that a
/// test trips by accident).
async fn replica(dir: &Path, redis: &Redis, extra: &[&str]) -> Running {
    let state = format!("--state={}", redis.url());
    let mut args = vec![state.as_str(), "--api-threads=1", "--state-timeout-ms=200"];
    args.extend_from_slice(extra);
    start_in(dir, &args, Stdio::inherit()).await
}

struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<String>,
    headers: reqwest::header::HeaderMap,
}

async fn post(r: &Running, path: &str, form: &[(&str, &str)]) -> Answer {
    let resp = reqwest::Client::new()
        .post(r.api_url(path))
        .form(form)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        body,
        retry_after,
        headers,
    }
}

async fn client_credentials(r: &Running, id: &str, secret: &str) -> Answer {
    post(
        r,
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ],
    )
    .await
}

async fn refresh(r: &Running, token: &str) -> Answer {
    post(
        r,
        "/oauth2/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "runner"),
            ("client_secret", "runner-test-secret"),
            ("refresh_token", token),
        ],
    )
    .await
}

/// RFC 7009 revocation or RFC 7662 introspection (`path`) of `token` by the client `id`.
async fn about(r: &Running, path: &str, id: &str, secret: &str, token: &str) -> Answer {
    post(
        r,
        path,
        &[
            ("client_id", id),
            ("client_secret", secret),
            ("token", token),
        ],
    )
    .await
}

fn field(a: &Answer, k: &str) -> String {
    a.body[k]
        .as_str()
        .unwrap_or_else(|| panic!("no {k} in {} {}", a.status, a.body))
        .to_owned()
}

#[tokio::test]
async fn a_refresh_token_spent_at_one_replica_is_reuse_at_the_other_and_revokes_the_chain() {
    let dir = folder("reuse");
    let redis = Redis::start().await;
    let (a, b) = (
        replica(&dir, &redis, &[]).await,
        replica(&dir, &redis, &[]).await,
    );
    let first = client_credentials(&a, "runner", "runner-test-secret").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let rt = field(&first, "refresh_token");

    let spent = refresh(&a, &rt).await;
    assert_eq!(spent.status, 200, "{}", spent.body);
    let successor = field(&spent, "refresh_token");

    // The copy comes back at the other replica: reuse, and the whole chain is revoked there too.
    let replay = refresh(&b, &rt).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert_eq!(replay.body["error"], "invalid_grant");
    assert!(
        replay.body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("already used")),
        "{}",
        replay.body
    );
    for r in [&a, &b] {
        let next = refresh(r, &successor).await;
        assert_eq!(
            next.status, 400,
            "the chain is revoked everywhere: {}",
            next.body
        );
    }

    // Redis holds ids and hashes, never a token or a secret, and every key expires.
    let keys = redis.keys().await;
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(k.starts_with("tessera:"), "{k}");
        assert!(!k.contains(&rt) && !k.contains("runner"), "{k}");
        let ttl = redis.query(&["PTTL", k]).await.expect("PTTL");
        let ttl: i64 = redis::from_redis_value(ttl).expect("ttl");
        assert!(ttl > 0, "{k} never expires ({ttl})");
    }
}

#[tokio::test]
async fn of_concurrent_exchanges_of_one_refresh_token_across_replicas_exactly_one_succeeds() {
    let dir = folder("race");
    let redis = Redis::start().await;
    let (a, b) = (
        replica(&dir, &redis, &[]).await,
        replica(&dir, &redis, &[]).await,
    );
    for round in 0..5 {
        let first = client_credentials(&a, "runner", "runner-test-secret").await;
        let rt = field(&first, "refresh_token");
        let tries = (0..16u32).map(|i| {
            let (r, rt) = (if i.is_multiple_of(2) { &a } else { &b }, rt.clone());
            async move { refresh(r, &rt).await.status }
        });
        let statuses = futures::future::join_all(tries).await;
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(ok, 1, "round {round}: {statuses:?}");
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 400),
            "{statuses:?}"
        );
    }
}

#[tokio::test]
async fn a_revocation_at_one_replica_is_seen_by_introspection_and_refresh_at_the_other() {
    let dir = folder("revoke");
    let redis = Redis::start().await;
    let (a, b) = (
        replica(&dir, &redis, &[]).await,
        replica(&dir, &redis, &[]).await,
    );
    let issued = client_credentials(&a, "opaque-runner", "opaque-test-secret").await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    let access = field(&issued, "access_token");
    let introspect = async |r: &Running, token: &str| {
        about(
            r,
            "/oauth2/introspect",
            "opaque-runner",
            "opaque-test-secret",
            token,
        )
        .await
    };
    assert_eq!(introspect(&b, &access).await.body["active"], true);
    let revoked = about(
        &a,
        "/oauth2/revoke",
        "opaque-runner",
        "opaque-test-secret",
        &access,
    )
    .await;
    assert_eq!(revoked.status, 200);
    // Within one request: the very next introspection at the other replica.
    assert_eq!(introspect(&b, &access).await.body["active"], false);

    // A refresh token revoked at B is refused at A.
    let rt = field(
        &client_credentials(&a, "runner", "runner-test-secret").await,
        "refresh_token",
    );
    let r = about(&b, "/oauth2/revoke", "runner", "runner-test-secret", &rt).await;
    assert_eq!(r.status, 200);
    let refused = refresh(&a, &rt).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("revoked")),
        "{}",
        refused.body
    );
}

#[tokio::test]
async fn guessing_budgets_are_shared_a_guesser_cannot_go_round_the_replicas() {
    let dir = folder("lockout");
    let redis = Redis::start().await;
    let limits = [
        "--free-failed-auth=2",
        "--max-failed-auth-per-client=4",
        "--max-failed-auth-per-address=1000",
    ];
    let (a, b) = (
        replica(&dir, &redis, &limits).await,
        replica(&dir, &redis, &limits).await,
    );
    // Two free failures, one at each replica, then a third (allowed, now 1 s of delay).
    for r in [&a, &b, &a] {
        let x = client_credentials(r, "runner", "wrong").await;
        assert_eq!(x.status, 401, "{}", x.body);
    }
    // The next guess, at either replica, must wait: the replicas count together.
    for r in [&b, &a] {
        let x = client_credentials(r, "runner", "wrong").await;
        assert_eq!(x.status, 429, "{}", x.body);
        assert!(x.retry_after.is_some());
        // The right secret from the guesser's own source waits too (it is the same source here).
        let y = client_credentials(r, "runner", "runner-test-secret").await;
        assert_eq!(y.status, 429, "{}", y.body);
    }
    // After the delay the right secret is served and clears the pair everywhere.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ok = client_credentials(&b, "runner", "runner-test-secret").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    for _ in 0..2 {
        assert_eq!(
            client_credentials(&a, "runner", "wrong").await.status,
            401,
            "free again after a success"
        );
    }
}

/// Redis killed under load: client_credentials goes on (each replica counting guesses on its
/// own), refresh, revocation and introspection answer 503 (never 500, never a token that may be
/// stale), `/readyz` says so; Redis started again (empty) and both recover by themselves.
#[tokio::test]
async fn redis_killed_under_load_then_restarted() {
    let dir = folder("faults");
    let mut redis = Redis::start().await;
    let (a, b) = (
        replica(&dir, &redis, &[]).await,
        replica(&dir, &redis, &[]).await,
    );
    let rt = field(
        &client_credentials(&a, "runner", "runner-test-secret").await,
        "refresh_token",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (a, b, stop) = (a.api_url(""), b.api_url(""), stop.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let base = if i.is_multiple_of(2) { &a } else { &b };
                i += 1;
                let s = http
                    .post(format!("{base}/oauth2/token"))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", "runner"),
                        ("client_secret", "runner-test-secret"),
                    ])
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                *statuses.entry(s).or_default() += 1;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;

    for r in [&a, &b] {
        let x = refresh(r, &rt).await;
        assert_eq!(x.status, 503, "refresh fails closed: {}", x.body);
        assert_eq!(x.body["error"], "temporarily_unavailable");
        let i = about(r, "/oauth2/introspect", "runner", "runner-test-secret", &rt).await;
        assert_eq!(i.status, 503, "introspection fails closed: {}", i.body);
        let v = about(r, "/oauth2/revoke", "runner", "runner-test-secret", &rt).await;
        assert_eq!(v.status, 503, "revocation fails closed: {}", v.body);
        let ready: Value = reqwest::get(r.admin_url("/readyz"))
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        assert_eq!(ready["ready"], true, "still serving client_credentials");
        assert_eq!(ready["state"]["mode"], "redis");
        assert_eq!(ready["state"]["up"], false, "{ready}");
        let metrics = reqwest::get(r.admin_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(metrics.contains("tessera_state_up 0"), "{metrics}");
    }
    let during = client_credentials(&b, "runner", "runner-test-secret").await;
    assert_eq!(
        during.status, 200,
        "client_credentials goes on: {}",
        during.body
    );

    redis.restart().await;
    let back = Instant::now();
    let mut recovered = None;
    while back.elapsed() < Duration::from_secs(10) {
        let x = refresh(&b, &rt).await;
        if x.status == 200 {
            recovered = Some(back.elapsed());
            break;
        }
        assert_eq!(x.status, 503, "{}", x.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = recovered.expect("refresh never recovered after Redis came back");
    eprintln!("refresh recovered {took:?} after Redis restarted");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.expect("load");
    eprintln!("client_credentials under the fault: {statuses:?}");
    assert!(
        statuses.keys().all(|s| *s == 200),
        "only 200s under the fault: {statuses:?}"
    );
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > 20,
        "{statuses:?}"
    );
}

/// A replica restarted loses nothing: what it spent and revoked is in Redis.
#[tokio::test]
async fn a_restarted_replica_still_refuses_what_was_spent_and_revoked() {
    let dir = folder("restart");
    let redis = Redis::start().await;
    let a = replica(&dir, &redis, &[]).await;
    let rt = field(
        &client_credentials(&a, "runner", "runner-test-secret").await,
        "refresh_token",
    );
    assert_eq!(refresh(&a, &rt).await.status, 200);
    let access = field(
        &client_credentials(&a, "opaque-runner", "opaque-test-secret").await,
        "access_token",
    );
    let revoked = about(
        &a,
        "/oauth2/revoke",
        "opaque-runner",
        "opaque-test-secret",
        &access,
    )
    .await;
    assert_eq!(revoked.status, 200);
    drop(a);
    let a = replica(&dir, &redis, &[]).await;
    assert_eq!(
        refresh(&a, &rt).await.status,
        400,
        "spent before the restart"
    );
    let i = about(
        &a,
        "/oauth2/introspect",
        "opaque-runner",
        "opaque-test-secret",
        &access,
    )
    .await;
    assert_eq!(i.body["active"], false, "revoked before the restart");
}

/// The same two replicas with `--state memory` (the default) let the replay through: the
/// weaker guarantee the README states, and the reason the chart refuses several replicas
/// without shared state.
#[tokio::test]
async fn with_per_replica_state_the_replay_gets_through() {
    let dir = folder("memory");
    let a = start_in(&dir, &["--api-threads=1"], Stdio::inherit()).await;
    let b = start_in(&dir, &["--api-threads=1"], Stdio::inherit()).await;
    let rt = field(
        &client_credentials(&a, "runner", "runner-test-secret").await,
        "refresh_token",
    );
    assert_eq!(refresh(&a, &rt).await.status, 200);
    assert_eq!(refresh(&b, &rt).await.status, 200, "per-replica state");
    assert_eq!(
        refresh(&a, &rt).await.status,
        400,
        "the same replica sees reuse"
    );
}

#[tokio::test]
async fn a_password_in_the_state_url_is_refused_without_echoing_it() {
    let out = std::process::Command::new(server::BIN)
        .args([
            "--source=dir",
            "--dir",
            server::QUICKSTART,
            "--state=redis://user:hunter2-secret@127.0.0.1:6379/0",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--state-password-file"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let out = std::process::Command::new(server::BIN)
        .args([
            "--source=dir",
            "--dir",
            server::QUICKSTART,
            "--state=mysql://x",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis://"));
}

fn header(a: &Answer, name: &str) -> String {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A policy's rateLimit is one bucket for all replicas; a Credential's own quota overrides the
/// policy; refusals are 429 with Retry-After and the RateLimit headers, counted per policy.
#[tokio::test]
async fn rate_limits_and_quotas_are_shared_across_replicas() {
    let dir = folder("limits");
    let redis = Redis::start().await;
    let (a, b) = (
        replica(&dir, &redis, &[]).await,
        replica(&dir, &redis, &[]).await,
    );
    // A burst of 3 at 1/s, spent across both replicas.
    let mut statuses = Vec::new();
    for r in [&a, &b, &a, &b] {
        let x = client_credentials(r, "limited-app", "runner-test-secret").await;
        if x.status == 200 {
            assert_eq!(header(&x, "ratelimit-policy"), "\"burst\";q=3;w=3");
            assert!(
                header(&x, "ratelimit").starts_with("\"burst\";r="),
                "{:?}",
                x.headers
            );
        } else {
            assert_eq!(x.status, 429, "{}", x.body);
            assert_eq!(x.body["error"], "slow_down");
            assert_eq!(x.retry_after.as_deref(), Some("1"));
            assert_eq!(header(&x, "ratelimit"), "\"burst\";r=0;t=1");
        }
        statuses.push(x.status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "one bucket for both replicas"
    );
    // One request per second refills.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        client_credentials(&b, "limited-app", "runner-test-secret")
            .await
            .status,
        200
    );
    // A wrong secret is a guess, not a token request: it spends no quota.
    assert_eq!(
        client_credentials(&a, "quota-app", "wrong").await.status,
        401
    );
    for r in [&a, &b] {
        let x = client_credentials(r, "quota-app", "runner-test-secret").await;
        assert_eq!(x.status, 200, "{}", x.body);
        assert!(
            header(&x, "ratelimit").contains("\"day\";r="),
            "{:?}",
            x.headers
        );
    }
    let over = client_credentials(&a, "quota-app", "runner-test-secret").await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert!(
        over.body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("quota") && d.contains("midnight UTC")),
        "{}",
        over.body
    );
    let wait: u64 = over
        .retry_after
        .as_deref()
        .unwrap_or("0")
        .parse()
        .expect("secs");
    assert!((1..=86_400).contains(&wait), "{wait}");
    let metrics = reqwest::get(a.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"tessera_rate_limited_total{policy="default/limited",limit="quota"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("quota-app"), "no client_id labels");
    // An unlimited client carries no RateLimit headers.
    let free = client_credentials(&a, "runner", "runner-test-secret").await;
    assert_eq!(free.status, 200);
    assert!(free.headers.get("ratelimit").is_none());
}

/// With `--state memory` the same limits hold within the replica.
#[tokio::test]
async fn rate_limits_hold_in_memory_state_too() {
    let dir = folder("limits-memory");
    let a = start_in(&dir, &["--api-threads=1"], Stdio::inherit()).await;
    let statuses: Vec<u16> = futures::future::join_all((0..6).map(|_| async {
        client_credentials(&a, "limited-app", "runner-test-secret")
            .await
            .status
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
}
