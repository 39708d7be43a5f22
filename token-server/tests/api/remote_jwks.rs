//! Clients that publish their own keys (`spec.jwksUri`): a real HTTPS key server on loopback
//! (rustls, a CA made here with rcgen), keys rotated there and picked up on an unknown kid, and
//! every way a key server can be wrong or hostile refused with `invalid_client`.

use crate::harness::{Harness, ISSUER, form};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_token_server::remote_jwks::RemoteJwks;

/// What the key server answers, changed by the test as it goes.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    delay: Duration,
    location: Option<String>,
}

struct KeyServer {
    port: u16,
    answers: Arc<Mutex<std::collections::HashMap<String, Answer>>>,
    hits: Arc<AtomicUsize>,
    ca_der: rustls_pki_types::CertificateDer<'static>,
}

impl KeyServer {
    fn set(&self, path: &str, body: String) {
        self.answer(
            path,
            Answer {
                status: 200,
                body,
                delay: Duration::ZERO,
                location: None,
            },
        );
    }
    fn answer(&self, path: &str, a: Answer) {
        self.answers
            .lock()
            .expect("answers")
            .insert(path.to_owned(), a);
    }
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }
}

fn ca_and_server_cert() -> (rcgen::Certificate, rcgen::Certificate, rcgen::KeyPair) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "key server test CA");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("cert");
    (ca_cert, cert, key)
}

/// An HTTPS server on 127.0.0.1 answering each path as told (an axum router over rustls).
async fn key_server() -> KeyServer {
    let (ca, cert, key) = ca_and_server_cert();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let answers: Arc<Mutex<std::collections::HashMap<String, Answer>>> = Arc::default();
    let hits = Arc::new(AtomicUsize::new(0));
    let (a, h) = (answers.clone(), hits.clone());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (a, h) = (a.clone(), h.clone());
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let ans = a.lock().expect("answers").get(uri.path()).cloned();
            let Some(ans) = ans else {
                return axum::http::Response::builder()
                    .status(404)
                    .body(axum::body::Body::empty())
                    .expect("response");
            };
            tokio::time::sleep(ans.delay).await;
            let mut b = axum::http::Response::builder()
                .status(ans.status)
                .header("content-type", "application/json");
            if let Some(l) = ans.location {
                b = b.header("location", l);
            }
            b.body(axum::body::Body::from(ans.body)).expect("response")
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    KeyServer {
        port,
        answers,
        hits,
        ca_der: ca.der().clone(),
    }
}

fn jwks(k: &rcgen::KeyPair, kid: &str) -> String {
    let raw = k.public_key_raw();
    json!({"keys": [
        // A published set often carries other keys: an encryption key is skipped.
        {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
         "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])},
        {"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "x5t": "not read",
         "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])}]})
    .to_string()
}

fn manifests(clients: &[(&str, &str)], allow_internal: bool) -> String {
    let mut m = format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {{name: published}}
spec: {{signingAlgorithm: ES256, clientAuthMethods: [private_key_jwt], allowInternalJwksUri: {allow_internal}}}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {{name: ledger}}
spec: {{audience: "https://api.test/ledger", basePath: /ledger}}
"#
    );
    for (id, uri) in clients {
        m.push_str(&format!(
            "---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: {id}}}\nspec: {{clientId: {id}, policyRef: {{name: published}}, acl: [ledger], jwksUri: \"{uri}\"}}\n"
        ));
    }
    m
}

/// An ES256 assertion signed by hand with aws-lc-rs (not with the server's JOSE library).
fn assertion(key: &rcgen::KeyPair, kid: &str, client: &str) -> String {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    static N: AtomicUsize = AtomicUsize::new(0);
    let now = jiff::Timestamp::now().as_second();
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let claims = json!({"iss": client, "sub": client, "aud": format!("{ISSUER}/oauth2/token"),
        "exp": now + 60, "iat": now, "jti": format!("remote-{}", N.fetch_add(1, Ordering::SeqCst))});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der())
        .expect("p256")
        .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
        .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

async fn token(h: &Harness, a: &str) -> crate::harness::Resp {
    let body = form(&[
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", a),
    ]);
    // Each request from its own address: the refused ones are failures, and the guessing
    // budgets would soon tell one source to wait.
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let ip = format!("10.{}.{}.1", n / 250 + 100, n % 250);
    h.post_from(&ip, "/oauth2/token", &body, None).await
}

/// Fetches at most every second here (10 s in production), so the test can wait it out.
const REFETCH: Duration = Duration::from_secs(1);

fn harness(ks: &KeyServer, text: &str) -> Harness {
    let mut h = Harness::with_files(&[("m.yaml", text)]);
    h.state.remote_jwks = Arc::new(
        RemoteJwks::new(std::slice::from_ref(&ks.ca_der))
            .expect("fetcher")
            .with_refetch_interval(REFETCH),
    );
    h
}

#[tokio::test]
async fn published_keys_get_tokens_and_a_new_kid_fetches_them_again() {
    let ks = key_server().await;
    let (a, b) = (
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key"),
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key"),
    );
    ks.set("/jwks.json", jwks(&a, "2026-a"));
    let h = harness(
        &ks,
        &manifests(&[("publisher", &ks.url("127.0.0.1", "/jwks.json"))], true),
    );
    let r = token(&h, &assertion(&a, "2026-a", "publisher")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let claims = h.verify_jwt(&r.str("access_token")).await;
    assert_eq!(claims["client_id"], "publisher");
    // Cached: a second request does not fetch.
    assert_eq!(
        token(&h, &assertion(&a, "2026-a", "publisher"))
            .await
            .status,
        200
    );
    assert_eq!(
        ks.hits.load(Ordering::SeqCst),
        1,
        "one fetch for two requests"
    );
    // The client rotates at its key server; the new kid is unknown here, so it is fetched
    // (once the refetch interval since the last fetch has passed).
    tokio::time::sleep(REFETCH).await;
    ks.set("/jwks.json", jwks(&b, "2026-b"));
    let r = token(&h, &assertion(&b, "2026-b", "publisher")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ks.hits.load(Ordering::SeqCst), 2);
    // The old key is gone from the set.
    let r = token(&h, &assertion(&a, "2026-a", "publisher")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // A flood of unknown kids (anyone may send them) fetches at most once per interval: none
    // right after a fetch.
    // (Past the first ones the guessing budget of the client answers 429 before any lookup.)
    for i in 0..20 {
        let r = token(&h, &assertion(&b, &format!("forged-{i}"), "publisher")).await;
        assert!(
            [(401, "invalid_client"), (429, "slow_down")].contains(&(r.status.as_u16(), r.error())),
            "{}",
            r.body
        );
    }
    assert_eq!(
        ks.hits.load(Ordering::SeqCst),
        2,
        "unknown kids did not refetch"
    );
    // Concurrent first requests of another client wait for one fetch.
    ks.set("/other.json", jwks(&a, "o-1"));
    let h2 = harness(
        &ks,
        &manifests(&[("other", &ks.url("127.0.0.1", "/other.json"))], true),
    );
    let before = ks.hits.load(Ordering::SeqCst);
    let reqs: Vec<_> = (0..10).map(|_| assertion(&a, "o-1", "other")).collect();
    let all = futures::future::join_all(reqs.iter().map(|x| token(&h2, x))).await;
    assert!(
        all.iter().all(|r| r.status == 200),
        "every request got a token"
    );
    assert_eq!(
        ks.hits.load(Ordering::SeqCst) - before,
        1,
        "one fetch for ten requests"
    );
}

#[tokio::test]
async fn internal_addresses_are_refused_unless_the_policy_allows_them() {
    let ks = key_server().await;
    let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    ks.set("/jwks.json", jwks(&k, "k"));
    let clients = [
        ("by-ip", ks.url("127.0.0.1", "/jwks.json")),
        ("by-v6", ks.url("[::ffff:127.0.0.1]", "/jwks.json")),
        ("by-name", ks.url("localhost", "/jwks.json")),
        ("by-svc", "https://keys.default.svc/jwks.json".to_owned()),
        (
            "metadata",
            "https://169.254.169.254/latest/meta-data".to_owned(),
        ),
    ];
    let list: Vec<(&str, &str)> = clients.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let h = harness(&ks, &manifests(&list, false));
    for (id, _) in &clients {
        let r = token(&h, &assertion(&k, "k", id)).await;
        assert_eq!(
            (r.status.as_u16(), r.error()),
            (401, "invalid_client"),
            "{id}"
        );
        assert!(
            r.desc().starts_with("spec.jwksUri:")
                && (r.desc().contains("internal address") || r.desc().contains("local name")),
            "{id}: {}",
            r.desc()
        );
    }
    assert_eq!(ks.hits.load(Ordering::SeqCst), 0, "nothing was fetched");
}

#[tokio::test]
async fn oversized_slow_redirecting_untrusted_and_private_key_servers_are_refused() {
    let ks = key_server().await;
    let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let ok = |body: String| Answer {
        status: 200,
        body,
        delay: Duration::ZERO,
        location: None,
    };
    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(70 * 1024));
    ks.answer("/big.json", ok(big));
    ks.answer(
        "/slow.json",
        Answer {
            delay: Duration::from_secs(5),
            ..ok(jwks(&k, "k"))
        },
    );
    ks.answer(
        "/moved.json",
        Answer {
            status: 302,
            location: Some(ks.url("127.0.0.1", "/jwks.json")),
            ..ok(String::new())
        },
    );
    ks.answer("/jwks.json", ok(jwks(&k, "k")));
    let private = jwks(&k, "k").replace(r#""kid":"k""#, r#""d":"c2VjcmV0","kid":"k""#);
    assert!(private.contains(r#""d""#), "{private}");
    ks.answer("/private.json", ok(private));
    ks.answer("/html", ok("<html>keys</html>".into()));
    let cases = [
        ("big", "/big.json", "larger than 65536 bytes"),
        ("slow", "/slow.json", "no answer within 3 s"),
        (
            "moved",
            "/moved.json",
            "HTTP 302 (redirects are not followed)",
        ),
        ("private", "/private.json", "private key member"),
        ("html", "/html", "not a JWKS"),
        ("missing", "/missing", "HTTP 404"),
    ];
    let list: Vec<(&str, String)> = cases
        .iter()
        .map(|(id, p, _)| (*id, ks.url("127.0.0.1", p)))
        .collect();
    let refs: Vec<(&str, &str)> = list.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let h = harness(&ks, &manifests(&refs, true));
    for (id, _, want) in cases {
        let started = std::time::Instant::now();
        let r = token(&h, &assertion(&k, "k", id)).await;
        assert_eq!(
            (r.status.as_u16(), r.error()),
            (401, "invalid_client"),
            "{id}: {}",
            r.body
        );
        assert!(r.desc().contains(want), "{id}: {}", r.desc());
        assert!(!r.desc().contains("c2VjcmV0"), "never echoes key material");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{id} took {:?}",
            started.elapsed()
        );
    }
    // A key server whose certificate no trusted CA signed: the default fetcher (system roots).
    let mut h = Harness::with_files(&[(
        "m.yaml",
        &manifests(&[("untrusted", &ks.url("127.0.0.1", "/jwks.json"))], true),
    )]);
    h.state.remote_jwks = Arc::new(RemoteJwks::new(&[]).expect("fetcher"));
    let r = token(&h, &assertion(&k, "k", "untrusted")).await;
    assert_eq!((r.status.as_u16(), r.error()), (401, "invalid_client"));
    assert!(r.desc().contains("could not connect"), "{}", r.desc());
}

#[tokio::test]
async fn a_plain_http_or_second_source_of_keys_is_a_problem_in_the_report() {
    let ks = key_server().await;
    let text = manifests(&[("plain", "http://keys.example.com/jwks.json")], false)
        + "---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: both}\nspec: {clientId: both, policyRef: {name: published}, jwksUri: \"https://keys.example.com/j\", jwks: {keys: [{kty: OKP, crv: Ed25519, x: 11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo}]}}\n";
    let h = harness(&ks, &text);
    let served = h.state.served.load_full().expect("served");
    let report = format!("{:?}", served.snapshot.report().with_problems());
    assert!(
        report.contains("spec.jwksUri") && report.contains("https://"),
        "{report}"
    );
    assert!(report.contains("one way"), "{report}");
    assert!(served.snapshot.client("plain").is_none() && served.snapshot.client("both").is_none());
}
