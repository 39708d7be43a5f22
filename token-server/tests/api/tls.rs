//! HTTPS with rustls over loopback: a CA and server certificates made here with rcgen, a
//! Kubernetes-style Secret volume (`..data` symlink swap) rotated while clients keep connecting,
//! and clients that send garbage, nothing, or plain HTTP.

use crate::harness::*;
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_token_server::state::AppState;
use tessera_token_server::tls::{self, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "tessera test CA");
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("ca");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for localhost; returns (cert PEM, key PEM, DER).
fn server_cert(ca: &Ca, cn: &str) -> (String, String, Vec<u8>) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("signed");
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Writes a Secret-volume layout: `..data_<n>/`, `..data -> ..data_<n>`, `tls.crt -> ..data/tls.crt`.
fn publish(dir: &Path, n: u32, cert: &str, key: &str) {
    let data = dir.join(format!("..data_{n}"));
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("tls.crt"), cert).expect("cert");
    std::fs::write(data.join("tls.key"), key).expect("key");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..data_{n}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("atomic swap");
    for f in ["tls.crt", "tls.key"] {
        if !dir.join(f).exists() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).expect("link");
        }
    }
}

struct TlsServer {
    addr: std::net::SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    connector: tokio_rustls::TlsConnector,
    _stop: tokio::sync::watch::Sender<bool>,
    _harness: Harness,
    certs: TempDir,
}

async fn start(ca: &Ca, cert: &str, key: &str) -> TlsServer {
    start_with(ca, cert, key, &[], None).await
}

async fn start_with(
    ca: &Ca,
    cert: &str,
    key: &str,
    extra: &[(&str, &str)],
    client_ca: Option<&str>,
) -> TlsServer {
    let mut files_in: Vec<(&str, &str)> = vec![("fixture.yaml", FIXTURE)];
    files_in.extend_from_slice(extra);
    let h = Harness::with_files(&files_in); // its folder of manifests and key set, served over TLS
    let certs = TempDir::new();
    publish(&certs.0, 1, cert, key);
    let mut files = TlsFiles::new(certs.0.join("tls.crt"), certs.0.join("tls.key"));
    if let Some(pem) = client_ca {
        std::fs::write(certs.0.join("client-ca.pem"), pem).expect("client ca");
        files.client_ca = Some(certs.0.join("client-ca.pem"));
    }
    let config = tls::initial(&files).expect("loads");
    let mut state: AppState = h.state.clone();
    // These tests fail many certificates from one address on purpose: no guessing delays.
    state.store = Arc::new(tessera_token_server::store::Store::memory(
        tessera_token_server::lockout::LockoutConfig {
            free_failures: 10_000,
            ..Default::default()
        },
    ));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let stopped = {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(tls::watch(files, config.clone(), stopped));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(tessera_token_server::serve::serve(
        listener,
        tessera_token_server::http::router(state),
        tessera_token_server::serve::Limits {
            header_timeout: Duration::from_secs(1),
            max_connections: 1000,
        },
        Some(config),
        rx,
    ));
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls_pki_types::CertificateDer::from(pem_to_der(&ca.pem));
    roots.add(ca_der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsServer {
        roots: Arc::new(roots_for(ca)),
        addr,
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        _stop: stop,
        _harness: h,
        certs,
    }
}

fn roots_for(ca: &Ca) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(pem_to_der(&ca.pem)))
        .expect("root");
    roots
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

impl TlsServer {
    /// One HTTPS request on a new connection; returns (status line, peer certificate DER).
    async fn token(&self) -> (String, Vec<u8>) {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = self.connector.connect(name, tcp).await.expect("handshake");
        let peer = tls.get_ref().1.peer_certificates().expect("peer cert")[0].to_vec();
        let body = "grant_type=client_credentials";
        let req = format!(
            "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            basic("rs-client", "rs-secret"),
            body.len()
        );
        tls.write_all(req.as_bytes()).await.expect("write");
        let mut resp = String::new();
        let _ = tls.read_to_string(&mut resp).await;
        (resp.lines().next().unwrap_or_default().to_owned(), peer)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_tokens_and_a_rotated_certificate_is_used_without_restart() {
    let ca = ca();
    let (cert1, key1, der1) = server_cert(&ca, "first");
    let s = start(&ca, &cert1, &key1).await;
    let (status, peer) = s.token().await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(peer, der1);

    // cert-manager renews: the Secret volume swaps its `..data` link. Clients keep connecting.
    let (cert2, key2, der2) = server_cert(&ca, "second");
    publish(&s.certs.0, 2, &cert2, &key2);
    let start = Instant::now();
    loop {
        let (status, peer) = s.token().await;
        assert_eq!(
            status, "HTTP/1.1 200 OK",
            "no request fails during the rotation"
        );
        if peer == der2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A broken renewal is rejected; the current certificate keeps serving.
    publish(&s.certs.0, 3, "not a certificate", &key2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, peer) = s.token().await;
    assert_eq!((status.as_str(), peer == der2), ("HTTP/1.1 200 OK", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_silence_and_plain_http_only_cost_their_own_connection() {
    let ca = ca();
    let (cert, key, _) = server_cert(&ca, "server");
    let s = start(&ca, &cert, &key).await;
    let mut buf = [0u8; 512];
    // Garbage in place of a ClientHello, and plain HTTP on the TLS port.
    for junk in [
        &b"\x16\x03\x01\xff\xff\x00\x01garbage"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut c = tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connect");
        c.write_all(junk).await.expect("write");
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server closes a bad handshake");
    }
    // A client that connects and says nothing is dropped after the handshake timeout (1 s here).
    let mut silent = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    assert_eq!(
        s.token().await.0,
        "HTTP/1.1 200 OK",
        "others are served meanwhile"
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection was not closed: {closed:?}"
    );
    assert_eq!(s.token().await.0, "HTTP/1.1 200 OK");
}

#[test]
fn bad_certificate_files_are_refused_with_the_file_named() {
    let ca = ca();
    let (cert, key, _) = server_cert(&ca, "x");
    let (_, other_key, _) = server_cert(&ca, "y");
    let d = TempDir::new();
    let write = |name: &str, text: &str| {
        std::fs::write(d.0.join(name), text).expect("write");
        d.0.join(name)
    };
    let good_cert = write("c.pem", &cert);
    let good_key = write("k.pem", &key);
    assert!(tls::load(&TlsFiles::new(good_cert.clone(), good_key.clone())).is_ok());
    let err =
        tls::load(&TlsFiles::new(write("empty.pem", ""), good_key.clone())).expect_err("empty");
    assert!(err.to_string().contains("empty.pem"), "{err}");
    let err = tls::load(&TlsFiles::new(good_cert.clone(), write("nokey.pem", &cert)))
        .expect_err("no key");
    assert!(err.to_string().contains("nokey.pem"), "{err}");
    let err = tls::load(&TlsFiles::new(
        good_cert.clone(),
        write("other.pem", &other_key),
    ))
    .expect_err("mismatch");
    assert!(
        err.to_string().contains("do not make a TLS configuration"),
        "{err}"
    );
    let err =
        tls::load(&TlsFiles::new(d.0.join("missing.pem"), good_key.clone())).expect_err("missing");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let mut with_ca = TlsFiles::new(good_cert, good_key);
    with_ca.client_ca = Some(write("ca.pem", "not a CA"));
    let err = tls::load(&with_ca).expect_err("bad CA bundle");
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

/// A client certificate: (DER, key) with the given subject, SAN, issuer (None: self-signed) and
/// validity offset in days (negative: already expired; positive: not yet valid).
fn client_cert(
    cn: &str,
    org: Option<&str>,
    dns: Option<&str>,
    issuer: Option<&Ca>,
    shift_days: i64,
) -> (Vec<u8>, Vec<u8>) {
    let mut params = CertificateParams::new(dns.map(|d| vec![d.to_owned()]).unwrap_or_default())
        .expect("params");
    // Issued the conventional way, most general first (O, then CN), so that the RFC 4514 form
    // (most specific first) reads `CN=…,O=…`.
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(o) = org {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.distinguished_name.push(DnType::CommonName, cn);
    let (y, m, d) = day(shift_days - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = day(shift_days + 1);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = KeyPair::generate().expect("key");
    let cert = match issuer {
        Some(ca) => params.signed_by(&key, &ca.issuer).expect("signed"),
        None => params.self_signed(&key).expect("self-signed"),
    };
    (cert.der().to_vec(), key.serialize_der())
}

/// Midnight UTC, `offset` days from today.
fn day(offset: i64) -> (i32, u8, u8) {
    let d = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * offset))
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    (i32::from(d.year()), d.month() as u8, d.day() as u8)
}

fn thumbprint(der: &[u8]) -> String {
    use base64::Engine as _;
    // Computed here, independently of the server: base64url(SHA-256(DER)).
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

impl TlsServer {
    /// POSTs a form over a new TLS connection, optionally with a client certificate.
    async fn post_with_cert(
        &self,
        path: &str,
        body: &str,
        cert: Option<&(Vec<u8>, Vec<u8>)>,
    ) -> (u16, serde_json::Value) {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(self.roots.clone());
        let config = match cert {
            Some((der, key)) => builder
                .with_client_auth_cert(
                    vec![rustls_pki_types::CertificateDer::from(der.clone())],
                    rustls_pki_types::PrivateKeyDer::Pkcs8(key.clone().into()),
                )
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("handshake");
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).await.expect("write");
        let mut resp = String::new();
        let _ = tls.read_to_string(&mut resp).await;
        let status = resp
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let json = resp
            .split("\r\n\r\n")
            .nth(1)
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or_default();
        (status, json)
    }
}

const MTLS: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: certs}
spec:
  clientAuthMethods: [tls_client_auth, self_signed_tls_client_auth]
  grantTypes: [client_credentials, refresh_token]
  refresh: {enabled: true}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: bank-dn}
spec: {clientId: bank-dn, policyRef: {name: certs}, acl: [orders], mtls: {subjectDn: "CN=settlement-bank,O=Example Bank"}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: bank-san}
spec: {clientId: bank-san, policyRef: {name: certs}, acl: [orders], mtls: {san: {dns: settlement.bank.example}}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: self-client}
spec: {clientId: self-client, policyRef: {name: certs}, acl: [orders], mtls: {thumbprintSha256: THUMB}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_bound_clients_by_dn_san_and_thumbprint_and_every_rejection() {
    let ca = ca();
    let rogue = self::ca();
    let (srv_cert, srv_key, _) = server_cert(&ca, "server");
    let bank = client_cert(
        "settlement-bank",
        Some("Example Bank"),
        Some("settlement.bank.example"),
        Some(&ca),
        0,
    );
    let selfsigned = client_cert("self", None, None, None, 0);
    let manifests = MTLS.replace("THUMB", &thumbprint(&selfsigned.0));
    let s = start_with(
        &ca,
        &srv_cert,
        &srv_key,
        &[("mtls.yaml", &manifests)],
        Some(&ca.pem),
    )
    .await;
    let cc = |id: &str| format!("grant_type=client_credentials&client_id={id}");

    // Success by each binding type, and the token is bound to the certificate.
    for (id, cert) in [
        ("bank-dn", &bank),
        ("bank-san", &bank),
        ("self-client", &selfsigned),
    ] {
        let (status, body) = s.post_with_cert("/oauth2/token", &cc(id), Some(cert)).await;
        assert_eq!(status, 200, "{id}: {body}");
        let claims = s
            ._harness
            .verify_jwt(body["access_token"].as_str().expect("token"))
            .await;
        assert_eq!(
            claims["cnf"]["x5t#S256"],
            thumbprint(&cert.0),
            "{id}: cnf is the certificate's thumbprint"
        );
        assert_eq!(claims["client_id"], id);
    }
    // Introspection shows the binding; a refresh with the same certificate works.
    let (_, body) = s
        .post_with_cert("/oauth2/token", &cc("bank-dn"), Some(&bank))
        .await;
    let token = body["access_token"].as_str().expect("token").to_owned();
    let (_, intro) = s
        .post_with_cert(
            "/oauth2/introspect",
            &format!("client_id=bank-dn&token={token}"),
            Some(&bank),
        )
        .await;
    assert_eq!(
        (intro["active"].as_bool(), intro["cnf"]["x5t#S256"].as_str()),
        (Some(true), Some(thumbprint(&bank.0).as_str()))
    );
    let rt = body["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let (status, _) = s
        .post_with_cert(
            "/oauth2/token",
            &format!("grant_type=refresh_token&client_id=bank-dn&refresh_token={rt}"),
            Some(&bank),
        )
        .await;
    assert_eq!(status, 200);

    // Rejections: no certificate, expired, not yet valid, wrong CA, another client's certificate,
    // a self-signed certificate with the right DN.
    let expired = client_cert(
        "settlement-bank",
        Some("Example Bank"),
        None,
        Some(&ca),
        -30,
    );
    let future = client_cert("settlement-bank", Some("Example Bank"), None, Some(&ca), 30);
    let wrong_ca = client_cert(
        "settlement-bank",
        Some("Example Bank"),
        None,
        Some(&rogue),
        0,
    );
    let other = client_cert(
        "other-client",
        Some("Example Bank"),
        Some("other.example"),
        Some(&ca),
        0,
    );
    let forged = client_cert("settlement-bank", Some("Example Bank"), None, None, 0);
    // The review's spoof: one CN attribute whose value is `settlement-bank,O=Example Bank`,
    // issued by the trusted CA. Its subject string was `CN=settlement-bank,O=Example Bank`.
    let one_attribute = client_cert("settlement-bank,O=Example Bank", None, None, Some(&ca), 0);
    for (what, id, cert) in [
        ("no certificate", "bank-dn", None),
        ("expired", "bank-dn", Some(&expired)),
        ("not yet valid", "bank-dn", Some(&future)),
        ("wrong CA", "bank-dn", Some(&wrong_ca)),
        ("another client's certificate", "bank-dn", Some(&other)),
        (
            "another client's certificate by SAN",
            "bank-san",
            Some(&other),
        ),
        ("self-signed with the right DN", "bank-dn", Some(&forged)),
        (
            "one CN attribute holding the whole DN",
            "bank-dn",
            Some(&one_attribute),
        ),
        (
            "thumbprint of another certificate",
            "self-client",
            Some(&bank),
        ),
    ] {
        let (status, body) = s.post_with_cert("/oauth2/token", &cc(id), cert).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{what}: {body}"
        );
    }

    // The binding changes (a Credential edit): the old certificate stops authenticating.
    let path = s._harness.path().join("mtls.yaml");
    let edited = std::fs::read_to_string(&path).expect("read").replace(
        "CN=settlement-bank,O=Example Bank",
        "CN=new-bank,O=Example Bank",
    );
    std::fs::write(&path, edited).expect("write");
    s._harness.reload().expect("reload");
    let (status, _) = s
        .post_with_cert("/oauth2/token", &cc("bank-dn"), Some(&bank))
        .await;
    assert_eq!(status, 401, "a revoked binding no longer authenticates");
    let (status, _) = s
        .post_with_cert("/oauth2/token", &cc("bank-san"), Some(&bank))
        .await;
    assert_eq!(status, 200, "the other binding is unaffected");
}

/// Presents whatever certificate and key it is given, bypassing rustls' own consistency checks.
#[derive(Debug)]
struct RawClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for RawClientCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_client_certificate_fails_its_own_handshake_only() {
    let ca = ca();
    let (srv_cert, srv_key, _) = server_cert(&ca, "server");
    let s = start_with(&ca, &srv_cert, &srv_key, &[], Some(&ca.pem)).await;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let (_, key_der) = client_cert("x", None, None, None, 0);
    let key = provider
        .key_provider
        .load_private_key(rustls_pki_types::PrivateKeyDer::Pkcs8(key_der.into()))
        .expect("key");
    for garbage in [
        vec![0x30, 0x03, 0x01, 0x02, 0x03],
        vec![0xde, 0xad, 0xbe, 0xef],
        client_cert("other", None, None, None, 0).0,
    ] {
        // The last one is a real certificate, but for another key: its handshake signature fails.
        let certified = rustls::sign::CertifiedKey::new(
            vec![rustls_pki_types::CertificateDer::from(garbage)],
            key.clone(),
        );
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(s.roots.clone())
            .with_client_cert_resolver(Arc::new(RawClientCert(Arc::new(certified))));
        let tcp = tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            // TLS 1.3 clients finish first; the server's verdict arrives with the first read.
            tls.write_all(
                b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
            )
            .await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            std::io::Result::Ok(buf)
        })
        .await
        .expect("the server answers promptly");
        assert!(
            outcome.is_err() || outcome.as_ref().is_ok_and(|b| b.is_empty()),
            "a bad certificate never gets a response"
        );
    }
    assert_eq!(
        s.token().await.0,
        "HTTP/1.1 200 OK",
        "the server is still up for others"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_with_its_own_ca_bundle_trusts_that_ca_only() {
    let global = ca();
    let partner = self::ca();
    let (srv_cert, srv_key, _) = server_cert(&global, "server");
    let from_partner = client_cert(
        "settlement-bank",
        Some("Example Bank"),
        None,
        Some(&partner),
        0,
    );
    let from_global = client_cert(
        "settlement-bank",
        Some("Example Bank"),
        None,
        Some(&global),
        0,
    );
    let pem_yaml = partner.pem.replace('\n', "\n    ");
    let manifests = format!(
        "{}---\napiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: partner-certs}}\nspec:\n  clientAuthMethods: [tls_client_auth]\n  clientCa: {{configMapRef: {{name: partner-ca}}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: partner-ca}}\ndata:\n  ca.crt: |\n    {pem_yaml}\n---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: partner}}\nspec: {{clientId: partner, policyRef: {{name: partner-certs}}, acl: [orders], mtls: {{subjectDn: \"CN=settlement-bank,O=Example Bank\"}}}}\n---\napiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: lost-certs}}\nspec:\n  clientAuthMethods: [tls_client_auth]\n  clientCa: {{secretRef: {{name: missing-ca}}}}\n---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: lost}}\nspec: {{clientId: lost, policyRef: {{name: lost-certs}}, acl: [orders], mtls: {{subjectDn: \"CN=settlement-bank,O=Example Bank\"}}}}\n",
        MTLS.replace("THUMB", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    );
    let s = start_with(
        &global,
        &srv_cert,
        &srv_key,
        &[("mtls.yaml", &manifests)],
        Some(&global.pem),
    )
    .await;
    let cc = |id: &str| format!("grant_type=client_credentials&client_id={id}");
    assert_eq!(
        s.post_with_cert("/oauth2/token", &cc("partner"), Some(&from_partner))
            .await
            .0,
        200,
        "the policy's CA"
    );
    assert_eq!(
        s.post_with_cert("/oauth2/token", &cc("partner"), Some(&from_global))
            .await
            .0,
        401,
        "the global CA is not the policy's"
    );
    assert_eq!(
        s.post_with_cert("/oauth2/token", &cc("bank-dn"), Some(&from_global))
            .await
            .0,
        200,
        "other policies keep the global CA"
    );
    assert_eq!(
        s.post_with_cert("/oauth2/token", &cc("bank-dn"), Some(&from_partner))
            .await
            .0,
        401
    );
    assert_eq!(
        s.post_with_cert("/oauth2/token", &cc("lost"), Some(&from_global))
            .await
            .0,
        401,
        "a missing bundle fails closed"
    );
    assert_eq!(
        s.post_with_cert("/oauth2/token", &cc("lost"), Some(&from_partner))
            .await
            .0,
        401
    );
}

impl TlsServer {
    /// A POST of `len` bytes of body on a new connection, written whole before reading (as
    /// clients do); returns the status line, or the error the client saw.
    async fn oversized(&self, len: usize, chunked: bool) -> Result<String, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = self.connector.connect(name, tcp).await.expect("handshake");
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {len}")
        };
        let head = format!(
            "POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
        );
        tls.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let body = "a".repeat(len);
        if chunked {
            tls.write_all(format!("{len:x}\r\n{body}\r\n0\r\n\r\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        } else {
            tls.write_all(body.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut resp = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    resp.extend_from_slice(&buf[..n]);
                    if resp.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Err(e) if resp.is_empty() => return Err(e.to_string()),
                Err(_) => break,
            }
        }
        Ok(String::from_utf8_lossy(&resp)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned())
    }
}

/// A body over the limit on the TLS port is answered 413, and the client reads that answer:
/// the server reads and discards the rest of a body up to a bound before it answers, so the
/// client's unread bytes do not reset the connection under the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_over_tls_gets_its_413() {
    let ca = ca();
    let (cert, key, _) = server_cert(&ca, "server");
    let s = start(&ca, &cert, &key).await;
    for (len, chunked) in [
        (100_000, false),
        (100_000, true),
        (20_000, false),
        (900_000, false),
        (900_000, true),
    ] {
        let status = s.oversized(len, chunked).await;
        assert_eq!(
            status.as_deref(),
            Ok("HTTP/1.1 413 Payload Too Large"),
            "{len} bytes, chunked {chunked}"
        );
    }
    // And the server goes on serving.
    assert_eq!(s.token().await.0, "HTTP/1.1 200 OK");
}
