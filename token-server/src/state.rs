//! What requests read: the served snapshot and keys (swapped atomically as one value), and the
//! process-wide parts (config, metrics, lockout, revocations, the clock).

use crate::lockout::LockoutConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::token::keys::KeySet;
use arc_swap::ArcSwapOption;
use axum::body::Bytes;
use jiff::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_crds::model::Snapshot;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `iss` claim and discovery `issuer`, e.g. `https://tokens.example.com`.
    pub issuer: String,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Longest time a request may take.
    pub request_timeout: Duration,
    /// Brute-force protection.
    pub lockout: LockoutConfig,
    /// Peers whose forwarding headers name the source address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Password checks (argon2id) that may run at once.
    pub password_checks: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            body_limit: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            lockout: LockoutConfig::default(),
            trusted_proxies: Vec::new(),
            password_checks: crate::passwords::default_concurrency(),
        }
    }
}

/// One consistent view: a snapshot, the keys it was built with, and what is derived from them.
#[derive(Debug)]
pub struct Served {
    /// The resolved resources.
    pub snapshot: Snapshot,
    /// The key set.
    pub keys: Arc<KeySet>,
    /// Increases with every swap.
    pub generation: u64,
    /// When it was built.
    pub loaded_at: Timestamp,
    /// The JWKS document, serialized once.
    pub jwks: Bytes,
    /// The discovery document, serialized once.
    pub discovery: Bytes,
    /// Verifiers of the policies that bring their own client CA bundle.
    pub client_cas: std::collections::HashMap<
        tessera_crds::model::ObjectRef,
        Arc<dyn rustls::server::danger::ClientCertVerifier>,
    >,
    /// Clients bound to a ServiceAccount, by it.
    pub service_account_clients:
        std::collections::HashMap<ServiceAccountId, Arc<tessera_crds::model::Client>>,
}

impl Served {
    /// Builds the derived documents.
    pub fn new(
        snapshot: Snapshot,
        keys: Arc<KeySet>,
        generation: u64,
        issuer: &str,
        now: Timestamp,
    ) -> Served {
        let jwks = Bytes::from(keys.jwks(now).to_string());
        let offered = crate::metadata::Offered::of(&snapshot, &keys.algorithms(now));
        let discovery = Bytes::from(crate::metadata::document(issuer, &offered).to_string());
        let mut client_cas = std::collections::HashMap::new();
        let mut service_account_clients = std::collections::HashMap::new();
        for c in snapshot.clients() {
            if let Some((ns, name)) = &c.service_account {
                service_account_clients.insert(
                    ServiceAccountId {
                        namespace: ns.clone(),
                        name: name.clone(),
                    },
                    c.clone(),
                );
            }
            if let tessera_crds::model::ClientCa::Pem(pem) = &c.policy.client_ca
                && !client_cas.contains_key(&c.policy.owner)
            {
                match crate::tls::ca_verifier(pem.as_bytes()) {
                    Ok(v) => {
                        client_cas.insert(c.policy.owner.clone(), v);
                    }
                    // Fails closed: tls_client_auth admits nobody under this policy.
                    Err(e) => {
                        tracing::warn!(policy = %c.policy.owner, error = %e, "the policy's client CA bundle is not usable")
                    }
                }
            }
        }
        Served {
            snapshot,
            keys,
            generation,
            loaded_at: now,
            jwks,
            discovery,
            client_cas,
            service_account_clients,
        }
    }
}

/// The source's health, for `/readyz` and metrics.
#[derive(Debug, Default, Clone)]
pub struct SourceStatus {
    /// The last reload error, if the newest attempt failed.
    pub last_error: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<Timestamp>,
    /// Successful loads.
    pub loads: u64,
    /// Failed loads.
    pub failures: u64,
    /// The source's name (`dir:/path`).
    pub source: String,
    /// Keys were generated at start, not read.
    pub ephemeral_keys: bool,
    /// The kube source's watch health (`None` for the folder source).
    pub watch: Option<Arc<tessera_kube::Changes>>,
    /// When the current error was last logged, so a failing source logs it once, then a
    /// reminder at most every minute.
    pub error_logged_at: Option<std::time::Instant>,
}

impl SourceStatus {
    /// Since when the source has failed to reach its API server, if it is failing now.
    pub fn stale_since(&self) -> Option<Timestamp> {
        self.watch.as_ref().and_then(|w| w.failing_since())
    }
}

/// Records a client's revocation where every replica sees it (the kube source writes the
/// Credential's `status.notBefore`). A trait, so that the state the handlers read does not depend
/// on the source that implements it.
pub trait RevocationRecorder: Send + Sync {
    /// Tokens issued to `owner` at or before `at` are refused from now on, by every replica.
    fn revoke<'a>(
        &'a self,
        owner: &'a tessera_crds::model::ObjectRef,
        at: Timestamp,
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
}

/// Who a Kubernetes ServiceAccount token proves its bearer is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccountId {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Verifies Kubernetes ServiceAccount tokens (the kube source implements it against the
/// cluster's service-account issuer). A trait for the same reason as [`RevocationRecorder`].
pub trait ServiceAccountVerifier: Send + Sync {
    /// The ServiceAccount `token` was issued to, or why it is not accepted (said to the client:
    /// never key material).
    fn verify<'a>(
        &'a self,
        token: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<ServiceAccountId, String>>;

    /// Asks the API server whether `token` still authenticates `id` (TokenReview): refuses
    /// tokens of deleted pods and ServiceAccounts, which the keys alone cannot tell.
    fn review<'a>(
        &'a self,
        token: &'a str,
        id: &'a ServiceAccountId,
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
}

/// The clock requests use; tests move it.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Shared state of the API and admin routers.
#[derive(Clone)]
pub struct AppState {
    /// The current view; `None` until the first load.
    pub served: Arc<ArcSwapOption<Served>>,
    /// Settings.
    pub config: Arc<Config>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The security state: spent and revoked tokens, guessing budgets (in this process or
    /// shared by every replica).
    pub store: Arc<Store>,
    /// The bounded password-check slots.
    pub passwords: Arc<crate::passwords::PasswordChecks>,
    /// Source health.
    pub status: Arc<Mutex<SourceStatus>>,
    /// Current time.
    pub clock: Clock,
    /// Writes revocations through the Kubernetes API (the kube source); `None` keeps them local.
    pub cluster_revocation: Option<Arc<dyn RevocationRecorder>>,
    /// Verifies ServiceAccount tokens (the kube source); `None` refuses them.
    pub service_accounts: Option<Arc<dyn ServiceAccountVerifier>>,
    /// Fetches the keys of clients that publish them (`spec.jwksUri`).
    pub remote_jwks: Arc<crate::remote_jwks::RemoteJwks>,
    /// The audit trail (off until started).
    pub audit: crate::audit::Audit,
}

/// The `kid`s of a served JWKS document.
fn published_kids(jwks: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<Key>,
    }
    #[derive(serde::Deserialize)]
    struct Key {
        kid: Option<String>,
    }
    serde_json::from_slice::<Doc>(jwks)
        .map(|d| d.keys.into_iter().filter_map(|k| k.kid).collect())
        .unwrap_or_default()
}

impl AppState {
    /// Fresh state with the system clock, in-process security state and nothing served yet.
    pub fn new(config: Config) -> AppState {
        let store = Store::memory(config.lockout);
        Self::with_store(config, store)
    }

    /// Fresh state keeping its security state in `store`.
    pub fn with_store(config: Config, store: Store) -> AppState {
        let mut metrics = Metrics::new();
        metrics.register_store(&store.metrics);
        AppState {
            served: Arc::new(ArcSwapOption::empty()),
            store: Arc::new(store),
            passwords: Arc::new(crate::passwords::PasswordChecks::new(
                config.password_checks,
            )),
            config: Arc::new(config),
            metrics: Arc::new(metrics),
            status: Arc::new(Mutex::new(SourceStatus::default())),
            clock: Arc::new(Timestamp::now),
            cluster_revocation: None,
            service_accounts: None,
            audit: crate::audit::Audit::off(),
            remote_jwks: Arc::new(
                crate::remote_jwks::RemoteJwks::new(&[])
                    .expect("a TLS client with the system roots"),
            ),
        }
    }

    /// Swaps in a new view; in-flight requests keep the one they loaded.
    pub fn publish(&self, served: Served) {
        self.metrics
            .observe_snapshot(served.generation, served.loaded_at, &served.snapshot);
        self.metrics.observe_keys(&served.keys, served.loaded_at);
        let before = self.served.load_full();
        if before.as_ref().is_none_or(|b| b.jwks != served.jwks) {
            let kids = published_kids(&served.jwks);
            self.audit.emit(
                crate::audit::Kind::KeysChanged,
                served.loaded_at,
                &crate::audit::RequestCx::default(),
                |e| e.target.kids = kids,
            );
        }
        self.served.store(Some(Arc::new(served)));
    }

    /// Starts the audit trail into `sink`, counted in this state's metrics.
    pub fn start_audit(&mut self, sink: crate::audit::Sink) {
        self.audit =
            crate::audit::Audit::start(sink, crate::audit::QUEUE, self.metrics.audit.clone());
    }

    /// The source status, recovering from a poisoned lock.
    pub fn status(&self) -> std::sync::MutexGuard<'_, SourceStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}
