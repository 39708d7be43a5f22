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
    connector: tokio_rustls::TlsConnector,
    _stop: tokio::sync::watch::Sender<bool>,
    _harness: Harness,
    certs: TempDir,
}

async fn start(ca: &Ca, cert: &str, key: &str) -> TlsServer {
    let h = Harness::new(); // its folder of manifests and key set, served over TLS
    let certs = TempDir::new();
    publish(&certs.0, 1, cert, key);
    let files = TlsFiles::new(certs.0.join("tls.crt"), certs.0.join("tls.key"));
    let config = tls::initial(&files).expect("loads");
    let state: AppState = h.state.clone();
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
        Duration::from_secs(1),
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
        addr,
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        _stop: stop,
        _harness: h,
        certs,
    }
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
