//! Over real loopback sockets: the watched folder, concurrent requests during reloads, the
//! per-address budget, and a JWT validated against the JWKS fetched over HTTP.

use crate::harness::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tessera_token_server::source::dir::{self, DirLoader};
use tessera_token_server::state::{AppState, Config};
use tessera_token_server::token::keys::KeySet;

struct Server {
    api: SocketAddr,
    admin: SocketAddr,
    dir: TempDir,
    stop: tokio::sync::watch::Sender<bool>,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn start(config: Config) -> Server {
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("keys.yaml"),
        keys_manifest(&KeySet::generate_file(jiff::Timestamp::now()).expect("keys")),
    )
    .expect("keys");
    std::fs::write(dir.0.join("fixture.yaml"), FIXTURE).expect("fixture");
    let state = AppState::new(config);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (api, admin) = (
        api_l.local_addr().expect("addr"),
        admin_l.local_addr().expect("addr"),
    );
    let loader = DirLoader::new(dir.0.clone(), "tessera-keys".into(), ISSUER.into());
    tokio::spawn(dir::run(state.clone(), loader, stopped(rx.clone())));
    // The real accept loop, with a short header timeout for the slow-client test.
    tokio::spawn(tessera_token_server::serve::serve(
        api_l,
        tessera_token_server::http::router(state.clone()),
        tessera_token_server::serve::Limits {
            header_timeout: Duration::from_secs(1),
            max_connections: 1000,
        },
        None,
        rx.clone(),
    ));
    tokio::spawn(tessera_token_server::serve::serve(
        admin_l,
        tessera_token_server::admin::router(state),
        tessera_token_server::serve::Limits {
            header_timeout: Duration::from_secs(1),
            max_connections: 8,
        },
        None,
        rx,
    ));
    let s = Server {
        api,
        admin,
        dir,
        stop,
        http: reqwest::Client::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(Instant::now() < deadline, "server never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s
}

impl Server {
    async fn token(&self, id: &str, secret: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("http://{}/oauth2/token", self.api))
            .header("authorization", basic(id, secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.json().await.expect("json"))
    }

    async fn ready(&self) -> serde_json::Value {
        self.http
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json")
    }

    /// Polls until `check` holds, up to 5 s; returns how long it took.
    async fn eventually<F, Fut>(&self, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !check().await {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "change not served within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_over_http_validates_against_the_jwks_over_http() {
    let s = start(Config {
        issuer: ISSUER.into(),
        ..Config::default()
    })
    .await;
    let (status, body) = s.token("rs-client", "rs-secret").await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("token");
    let jwks: jsonwebtoken::jwk::JwkSet = s
        .http
        .get(format!("http://{}/.well-known/jwks.json", s.api))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let header = jsonwebtoken::decode_header(token).expect("header");
    let key = jsonwebtoken::DecodingKey::from_jwk(
        jwks.find(&header.kid.expect("kid")).expect("published"),
    )
    .expect("key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&["https://api.test/orders"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .expect("a standard validator accepts it")
        .claims;
    assert_eq!(claims["client_id"], "rs-client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watched_folder_is_served_without_restart_and_bad_changes_are_rejected() {
    let s = start(Config {
        issuer: ISSUER.into(),
        ..Config::default()
    })
    .await;
    let path = s.dir.0.join("fixture.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    // A new client appears.
    std::fs::write(s.dir.0.join("new.yaml"), "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: newcomer}\nspec: {clientId: newcomer, secretRef: {name: s-rs}, policyRef: {name: rs}, acl: [orders]}\n").expect("write");
    let took = s
        .eventually(|| async { s.token("newcomer", "rs-secret").await.0 == 200 })
        .await;
    eprintln!("new Credential served after {took:?}");
    // A broken edit is rejected; the last good snapshot keeps serving.
    std::fs::write(&path, format!("{text}\n---\nkind: [broken\n")).expect("write");
    s.eventually(|| async { s.ready().await["lastError"].is_string() })
        .await;
    assert_eq!(s.token("rs-client", "rs-secret").await.0, 200);
    assert!(
        s.ready().await["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("fixture.yaml"))
    );
    // Removing the broken part recovers.
    std::fs::write(&path, &text).expect("write");
    s.eventually(|| async { s.ready().await["lastError"].is_null() })
        .await;
    // Deleting a file removes its clients.
    std::fs::remove_file(s.dir.0.join("new.yaml")).expect("rm");
    s.eventually(|| async { s.token("newcomer", "rs-secret").await.0 == 401 })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_during_reloads_all_succeed() {
    let s = std::sync::Arc::new(
        start(Config {
            issuer: ISSUER.into(),
            ..Config::default()
        })
        .await,
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..40 {
                codes.push(s.token("es-client", "es-secret").await.0);
            }
            codes
        }));
    }
    let path = s.dir.0.join("fixture.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    for i in 0..6 {
        std::fs::write(&path, format!("{text}\n# edit {i}\n")).expect("write");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for t in tasks {
        let codes = t.await.expect("task");
        assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    }
    assert!(
        s.ready().await["generation"]
            .as_u64()
            .is_some_and(|g| g > 1),
        "reloads happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_address_budget_applies_over_sockets() {
    let mut cfg = Config {
        issuer: ISSUER.into(),
        ..Config::default()
    };
    cfg.lockout.source_budget = 5;
    let s = start(cfg).await;
    assert_eq!(s.token("rs-client", "rs-secret").await.0, 200);
    for i in 0..5 {
        assert_eq!(s.token(&format!("guess-{i}"), "x").await.0, 401);
    }
    let (status, body) = s.token("es-client", "es-secret").await;
    assert_eq!(status, 429, "a client new to this address waits: {body}");
    let (status, body) = s.token("rs-client", "rs-secret").await;
    assert_eq!(
        status, 200,
        "a client known at this address does not: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_disconnected_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(Config {
        issuer: ISSUER.into(),
        ..Config::default()
    })
    .await;
    let mut slow = tokio::net::TcpStream::connect(s.api)
        .await
        .expect("connect");
    slow.write_all(b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n").await.expect("write");
    // Meanwhile other clients are served.
    assert_eq!(s.token("rs-client", "rs-secret").await.0, 200);
    // The header timeout (1 s here) closes the slow connection.
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "the slow connection was not closed");
    // Garbage instead of HTTP is answered and closed too; the server stays up.
    let mut junk = tokio::net::TcpStream::connect(s.api)
        .await
        .expect("connect");
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3])
        .await
        .expect("write");
    let _ = tokio::time::timeout(Duration::from_secs(5), junk.read(&mut buf)).await;
    assert_eq!(s.token("rs-client", "rs-secret").await.0, 200);
}
