//! The in-cluster source: watch caches (kube-runtime reflectors) on the four kinds and the keys
//! Secret, an initial full sync before the first snapshot, then a debounced rebuild and one
//! atomic swap per burst of changes.
//!
//! Least privilege: the token server reads no Secret but the key set. Client secrets are
//! checked against the verifiers the operator publishes in each object's status.
//!
//! Last known good: a watch error (the API server is down) is logged and retried with backoff
//! by the reflectors; the caches, and so the served snapshot, keep their contents until the
//! watches resume. A change that fails to build (say, a broken key set) is rejected whole.

use crate::source::record;
use crate::state::{AppState, Served};
use crate::token::keys::{KeyArrivals, KeySet, SECRET_DATA_KEY};
use jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_crds::Credential;
use tessera_crds::model::{ObjectRef, resolve};
// The watch caches are shared with the operator.
pub use tessera_kube::{Changes, DEBOUNCE, WatchCaches, Watched};

/// Field manager of the token server's only write: a Credential's `status.notBefore`.
pub const FIELD_MANAGER: &str = "tessera-token-server";

/// Writes a Credential's `status.notBefore` through the API, so that a revocation reaches every
/// replica (each reads it from its watch cache) without any per-token object in etcd.
#[derive(Clone)]
pub struct NotBeforeWriter {
    client: Client,
}

impl std::fmt::Debug for NotBeforeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NotBeforeWriter")
    }
}

impl NotBeforeWriter {
    /// A writer using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Sets `status.notBefore` of the Credential `owner` to `at`: tokens issued to it at or
    /// before `at` are refused by every replica. A merge patch on the status subresource: the
    /// RBAC it needs is `patch` on `credentials/status`, which cannot change a spec.
    async fn write_not_before(&self, owner: &ObjectRef, at: Timestamp) -> Result<(), kube::Error> {
        let api = Api::<Credential>::namespaced(self.client.clone(), &owner.namespace);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let at = Timestamp::from_second(at.as_second()).unwrap_or(at);
        api.patch_status(
            &owner.name,
            &pp,
            &Patch::Merge(serde_json::json!({"status": {"notBefore": at.to_string()}})),
        )
        .await
        .map(|_| ())
    }
}

impl crate::state::RevocationRecorder for NotBeforeWriter {
    fn revoke<'a>(
        &'a self,
        owner: &'a ObjectRef,
        at: Timestamp,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.write_not_before(owner, at)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Settings of the kube source.
#[derive(Debug, Clone)]
pub struct KubeSource {
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// Namespace of the keys Secret.
    pub keys_namespace: String,
    /// Name of the keys Secret.
    pub keys_secret: String,
    /// Issuer of the tokens.
    pub issuer: String,
}

impl KubeSource {
    fn build(
        &self,
        c: &WatchCaches,
        arrivals: &Mutex<KeyArrivals>,
        generation: u64,
        now: Timestamp,
    ) -> Result<Served, String> {
        let secret = c.keys_secret().ok_or_else(|| {
            format!(
                "no key set yet: Secret {}/{} not found (the operator creates it)",
                self.keys_namespace, self.keys_secret
            )
        })?;
        let json = secret
            .data
            .as_ref()
            .and_then(|d| d.get(SECRET_DATA_KEY))
            .map(|b| b.0.clone())
            .ok_or_else(|| {
                format!(
                    "Secret {}/{}: no key `{SECRET_DATA_KEY}`",
                    self.keys_namespace, self.keys_secret
                )
            })?;
        let mut keys = KeySet::from_json(&json)
            .map_err(|e| format!("Secret {}/{}: {e}", self.keys_namespace, self.keys_secret))?;
        keys.hold_back(&mut arrivals.lock().unwrap_or_else(|e| e.into_inner()), now);
        let mut set = c.resource_set();
        // User pools and CA bundles, as the operator copied them; none until it has.
        if let Some(pd) = c.policy_data_secret()
            && let Some(bytes) = pd
                .data
                .as_ref()
                .and_then(|d| d.get(tessera_crds::policy_data::DATA_KEY))
        {
            tessera_crds::policy_data::extend(&mut set, &bytes.0).map_err(|e| {
                format!(
                    "Secret {}/{}: {e}",
                    self.keys_namespace,
                    tessera_crds::policy_data::secret_name(&self.keys_secret)
                )
            })?;
        }
        let snapshot = resolve(&set, keys.verifier_key(), now);
        Ok(Served::new(
            snapshot,
            Arc::new(keys),
            generation,
            &self.issuer,
            now,
        ))
    }

    /// Syncs, serves, and rebuilds on every change until `shutdown` resolves.
    pub async fn run(
        self,
        st: AppState,
        client: Client,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        st.status().source = if self.namespaces.is_empty() {
            "kube:all namespaces".into()
        } else {
            format!("kube:{}", self.namespaces.join(","))
        };
        let changed = Arc::new(Changes::default());
        st.status().watch = Some(changed.clone());
        let caches = Arc::new(WatchCaches::start(
            &client,
            Watched {
                namespaces: &self.namespaces,
                keys_namespace: &self.keys_namespace,
                keys_secret: &self.keys_secret,
                secrets_and_config_maps: false,
            },
            &changed,
        ));
        tokio::pin!(shutdown);
        // Not ready until every cache has listed once.
        let synced = caches.wait_synced();
        tokio::select! {
            _ = synced => {}
            _ = &mut shutdown => return Ok(()),
        }
        tracing::info!("watch caches synced");
        // The initial sync is not a propagation: the histogram starts with the first snapshot.
        changed.take_pending();
        let mut generation = 0u64;
        let arrivals = Arc::new(Mutex::new(KeyArrivals::default()));
        loop {
            let now = (st.clock)();
            generation += 1;
            let this = self.clone();
            let c = caches.clone();
            let g = generation;
            let a = arrivals.clone();
            let built = tokio::task::spawn_blocking(move || this.build(&c, &a, g, now))
                .await
                .map_err(|e| anyhow::anyhow!("building a snapshot panicked: {e}"))?;
            let outcome = built.map(|served| {
                tracing::debug!(
                    generation = served.generation,
                    clients = served.snapshot.counts().clients,
                    "serving a new snapshot"
                );
                st.publish(served);
                if let Some(since) = changed.take_pending() {
                    st.metrics.observe_propagation(since.elapsed());
                }
            });
            record(&st, &outcome, now);
            let next_key_change = st
                .served
                .load_full()
                .and_then(|s| s.keys.next_change((st.clock)()))
                .map(|t| {
                    Duration::from_secs(
                        ((t.as_second() - (st.clock)().as_second()).max(0) as u64) + 1,
                    )
                })
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = changed.notify.notified() => tokio::time::sleep(DEBOUNCE).await,
                _ = tokio::time::sleep(next_key_change) => {}
            }
        }
    }
}
