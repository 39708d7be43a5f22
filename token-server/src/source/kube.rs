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
use crate::token::keys::{KeySet, SECRET_DATA_KEY};
use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource};
use std::sync::Arc;
use std::time::Duration;
use tessera_crds::model::{ResourceSet, resolve};
use tessera_crds::{ApiProxy, AuthPolicy, Credential, Role};
use tokio::sync::Notify;

/// Batches a burst of watch events into one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(50);

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

struct Caches {
    proxies: Vec<Store<ApiProxy>>,
    policies: Vec<Store<AuthPolicy>>,
    credentials: Vec<Store<Credential>>,
    roles: Vec<Store<Role>>,
    keys: Store<Secret>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts a watch cache (reflector) on `api`, waking `changed` on every event; the task retries
/// with backoff on errors and keeps the cache's contents meanwhile. Shared with the operator.
pub fn cache<K>(
    api: Api<K>,
    wc: watcher::Config,
    changed: Arc<Notify>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, wc).default_backoff());
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(error = %e, kind = %K::kind(&Default::default()), "watch error; serving the last known good snapshot and retrying"),
            }
        }
    }));
    reader
}

/// Every object of several caches.
pub fn all<K: Resource + Clone>(stores: &[Store<K>]) -> Vec<Arc<K>>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    stores.iter().flat_map(|s| s.state()).collect()
}

impl KubeSource {
    fn start(&self, client: &Client, changed: &Arc<Notify>) -> Caches {
        let mut tasks = Vec::new();
        macro_rules! per_ns {
            ($t:ty) => {{
                let apis: Vec<Api<$t>> = if self.namespaces.is_empty() {
                    vec![Api::all(client.clone())]
                } else {
                    self.namespaces
                        .iter()
                        .map(|n| Api::namespaced(client.clone(), n))
                        .collect()
                };
                apis.into_iter()
                    .map(|a| cache(a, watcher::Config::default(), changed.clone(), &mut tasks))
                    .collect()
            }};
        }
        let proxies = per_ns!(ApiProxy);
        let policies = per_ns!(AuthPolicy);
        let credentials = per_ns!(Credential);
        let roles = per_ns!(Role);
        let keys = cache(
            Api::<Secret>::namespaced(client.clone(), &self.keys_namespace),
            watcher::Config::default().fields(&format!("metadata.name={}", self.keys_secret)),
            changed.clone(),
            &mut tasks,
        );
        Caches {
            proxies,
            policies,
            credentials,
            roles,
            keys,
            tasks,
        }
    }

    fn build(&self, c: &Caches, generation: u64, now: Timestamp) -> Result<Served, String> {
        let secret = c.keys.state().into_iter().next().ok_or_else(|| {
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
        let keys = KeySet::from_json(&json)
            .map_err(|e| format!("Secret {}/{}: {e}", self.keys_namespace, self.keys_secret))?;
        let set = ResourceSet {
            api_proxies: all(&c.proxies),
            auth_policies: all(&c.policies),
            credentials: all(&c.credentials),
            roles: all(&c.roles),
            secrets: Vec::new(),
            config_maps: Vec::new(),
        };
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
        let changed = Arc::new(Notify::new());
        let caches = Arc::new(self.start(&client, &changed));
        tokio::pin!(shutdown);
        // Not ready until every cache has listed once: a partial list would serve a partial model.
        let synced = async {
            for s in &caches.proxies {
                let _ = s.wait_until_ready().await;
            }
            for s in &caches.policies {
                let _ = s.wait_until_ready().await;
            }
            for s in &caches.credentials {
                let _ = s.wait_until_ready().await;
            }
            for s in &caches.roles {
                let _ = s.wait_until_ready().await;
            }
            let _ = caches.keys.wait_until_ready().await;
        };
        tokio::select! {
            _ = synced => {}
            _ = &mut shutdown => return Ok(()),
        }
        tracing::info!("watch caches synced");
        let mut generation = 0u64;
        loop {
            let now = (st.clock)();
            generation += 1;
            let this = self.clone();
            let c = caches.clone();
            let g = generation;
            let built = tokio::task::spawn_blocking(move || this.build(&c, g, now))
                .await
                .map_err(|e| anyhow::anyhow!("building a snapshot panicked: {e}"))?;
            let outcome = built.map(|served| {
                tracing::debug!(
                    generation = served.generation,
                    clients = served.snapshot.counts().clients,
                    "serving a new snapshot"
                );
                st.publish(served);
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
                _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
                _ = tokio::time::sleep(next_key_change) => {}
            }
        }
    }
}
