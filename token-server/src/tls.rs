//! TLS: the server certificate and key from PEM files, reloaded when they change.
//!
//! A Kubernetes Secret volume changes by swapping a `..data` symlink, not by writing the files, so
//! the folder holding the certificate is watched (any create, rename, write or remove in it), and
//! the files are re-read through their links. A certificate that does not load is rejected and the
//! previous one keeps serving. TLS 1.2 and 1.3 only, with aws-lc-rs as the one crypto provider.

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the certificate and key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle that client certificates for `tls_client_auth` must chain to.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// A certificate and key, without a client CA bundle.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file did not read or parse.
    #[error("{path}: not a PEM certificate chain: {message}")]
    Cert {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The key file did not read or parse.
    #[error("{path}: not a PEM private key: {message}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The client CA bundle did not read or parse.
    #[error("{path}: not a usable PEM CA bundle: {message}")]
    ClientCa {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// What a handshake uses: the server configuration, and the verifier client chains are checked
/// against after the handshake.
pub struct TlsState {
    /// The rustls configuration (client certificates requested, not required).
    pub server: Arc<ServerConfig>,
    /// Checks a client chain against the client CA bundle, if one is configured.
    pub client_ca: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("client_ca", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

/// A verifier for client chains from a PEM CA bundle; `None` if the bundle holds no usable CA.
pub fn ca_verifier(
    pem: &[u8],
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(v)
}

/// Reads the files into a server configuration.
pub fn load(files: &TlsFiles) -> Result<TlsState, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: files.cert.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_ca = match &files.client_ca {
        None => None,
        Some(path) => {
            let err = |message: String| TlsError::ClientCa {
                path: path.display().to_string(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            Some(ca_verifier(&pem).map_err(err)?)
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(crate::mtls::OptionalAnyClientCert::new(provider)))
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsState {
        server: Arc::new(config),
        client_ca,
    })
}

/// The current configuration, swapped on reload; new handshakes use the newest.
pub type SharedConfig = Arc<ArcSwap<TlsState>>;

/// Loads the files once; the caller then runs [`watch`].
pub fn initial(files: &TlsFiles) -> Result<SharedConfig, TlsError> {
    Ok(Arc::new(ArcSwap::from_pointee(load(files)?)))
}

/// Reloads the configuration whenever the certificate's folder changes, until `stop` resolves.
pub async fn watch(
    files: TlsFiles,
    config: SharedConfig,
    stop: impl std::future::Future<Output = ()>,
) -> notify::Result<()> {
    let folder: &Path = files
        .cert
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|ev| !matches!(ev.kind, notify::EventKind::Access(_))) {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(folder, RecursiveMode::NonRecursive)?;
    if let Some(key_folder) = files
        .key
        .parent()
        .filter(|k| !k.as_os_str().is_empty() && *k != folder)
    {
        watcher.watch(key_folder, RecursiveMode::NonRecursive)?;
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            Some(()) = rx.recv() => {
                // Let a swap of both files settle, then read them once.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
                match load(&files) {
                    Ok(c) => {
                        config.store(Arc::new(c));
                        tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "TLS certificate change rejected; still serving the previous one"),
                }
            }
        }
    }
}
