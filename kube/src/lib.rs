//! Watch caches on the Kubernetes API, shared by the operator and the token server: kube-runtime
//! reflectors on the four kinds (per namespace or cluster-wide), the keys and policy-data Secrets
//! by name, and optionally every Secret and ConfigMap of the watched namespaces (the operator's
//! view). [`Changes`] tells the reader that something changed, since when the oldest unserved
//! change waits, and since when the watches are failing; reflectors retry with a jittered backoff
//! and keep their contents meanwhile (last known good).
#![forbid(unsafe_code)]

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource};
use std::sync::Arc;
use std::time::Duration;
use tessera_crds::model::ResourceSet;
use tessera_crds::{ApiProxy, AuthPolicy, Credential, Role};
use tokio::sync::Notify;

/// Batches a burst of watch events into one rebuild.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// What the watch caches report to their reader: a wake-up per event, when the oldest change not
/// yet served arrived (for the propagation histogram), and since when the watches are failing.
#[derive(Debug, Default)]
pub struct Changes {
    /// Woken on every watch event.
    pub notify: Notify,
    pending_since: std::sync::Mutex<Option<std::time::Instant>>,
    failing_since: std::sync::Mutex<Option<Timestamp>>,
}

impl Changes {
    fn event(&self) {
        let mut p = self.pending_since.lock().unwrap_or_else(|e| e.into_inner());
        p.get_or_insert_with(std::time::Instant::now);
        drop(p);
        *self.failing_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.notify.notify_one();
    }

    fn error(&self) {
        self.failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(Timestamp::now);
    }

    /// Takes the arrival time of the oldest change not yet served.
    pub fn take_pending(&self) -> Option<std::time::Instant> {
        self.pending_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Since when the last watch request failed, if it has not recovered since.
    pub fn failing_since(&self) -> Option<Timestamp> {
        *self.failing_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Watch caches on the four kinds and the keys Secret, optionally on Secrets and ConfigMaps too
/// (the operator's view; the token server reads no Secret but the key set). Shared by the token
/// server's kube source and the operator.
pub struct WatchCaches {
    /// ApiProxies, one cache per watched namespace (or one for all).
    pub proxies: Vec<Store<ApiProxy>>,
    /// AuthPolicies.
    pub policies: Vec<Store<AuthPolicy>>,
    /// Credentials.
    pub credentials: Vec<Store<Credential>>,
    /// Roles.
    pub roles: Vec<Store<Role>>,
    /// Secrets (empty unless asked for).
    pub secrets: Vec<Store<Secret>>,
    /// ConfigMaps (empty unless asked for).
    pub config_maps: Vec<Store<ConfigMap>>,
    /// ServiceAccounts, per namespace (with `secrets_and_config_maps`: the operator).
    pub service_accounts: Option<Vec<Store<ServiceAccount>>>,
    /// The keys Secret alone, by field selector.
    pub keys: Store<Secret>,
    /// The policy-data Secret alone (see [`tessera_crds::policy_data`]).
    pub policy_data: Store<Secret>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for WatchCaches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What [`WatchCaches::start`] watches.
#[derive(Debug, Clone, Copy)]
pub struct Watched<'a> {
    /// Namespaces; empty watches all.
    pub namespaces: &'a [String],
    /// Namespace of the keys Secret.
    pub keys_namespace: &'a str,
    /// Name of the keys Secret.
    pub keys_secret: &'a str,
    /// Also every Secret, ConfigMap and ServiceAccount of the namespaces (the operator).
    pub secrets_and_config_maps: bool,
}

/// How a watch retries after an error: exponential from 200 ms, capped at 5 s, jittered down to
/// half of each step. kube-runtime's default caps at 30 s, so after an outage two replicas
/// could learn of a change up to 30 s apart, and a validator fetching the JWKS from the laggard
/// would lack a key the other one already signs with (issue 20). With the cap, every replica
/// reconnects within 5 s of the API server's return, well inside a key's prepublication window
/// (the operator's default is 30 min) on top of the per-replica hold-back
/// ([`KeySet::hold_back`]). The cost is one request per watch every 5 s during an outage.
struct WatchBackoff {
    next: Duration,
    rng: aws_lc_rs::rand::SystemRandom,
}

impl WatchBackoff {
    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            next: Self::MIN,
            rng: aws_lc_rs::rand::SystemRandom::new(),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        use aws_lc_rs::rand::SecureRandom as _;
        let step = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let mut b = [0u8; 1];
        let jitter = if self.rng.fill(&mut b).is_ok() {
            f64::from(b[0]) / 255.0
        } else {
            1.0
        };
        Some(step.mul_f64(0.5 + 0.5 * jitter))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// Starts a watch cache (reflector) on `api`, waking `changed` on every event; the task retries
/// with backoff on errors and keeps the cache's contents meanwhile.
fn cache<K>(
    api: Api<K>,
    wc: watcher::Config,
    changed: Arc<Changes>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, wc).backoff(WatchBackoff::default()));
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => changed.event(),
                Err(e) => {
                    changed.error();
                    tracing::warn!(error = %e, kind = %K::kind(&Default::default()), "watch error; keeping the cached objects and retrying");
                }
            }
        }
    }));
    reader
}

fn per_namespace<K>(
    client: &Client,
    namespaces: &[String],
    changed: &Arc<Changes>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Vec<Store<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    // One cache per namespace: a reflector's initial list replaces its whole store, so two
    // namespaces cannot share one.
    let apis: Vec<Api<K>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|n| Api::namespaced(client.clone(), n))
            .collect()
    };
    apis.into_iter()
        .map(|a| cache(a, watcher::Config::default(), changed.clone(), tasks))
        .collect()
}

fn all<K: Resource + Clone>(stores: &[Store<K>]) -> Vec<Arc<K>>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    stores.iter().flat_map(|s| s.state()).collect()
}

impl WatchCaches {
    /// Starts the caches; `changed` is woken on every watch event.
    pub fn start(client: &Client, w: Watched<'_>, changed: &Arc<Changes>) -> Self {
        let mut tasks = Vec::new();
        let ns = w.namespaces;
        let (secrets, config_maps, service_accounts) = if w.secrets_and_config_maps {
            (
                per_namespace(client, ns, changed, &mut tasks),
                per_namespace(client, ns, changed, &mut tasks),
                Some(per_namespace(client, ns, changed, &mut tasks)),
            )
        } else {
            (Vec::new(), Vec::new(), None)
        };
        let keys = cache(
            Api::<Secret>::namespaced(client.clone(), w.keys_namespace),
            watcher::Config::default().fields(&format!("metadata.name={}", w.keys_secret)),
            changed.clone(),
            &mut tasks,
        );
        let policy_data = cache(
            Api::<Secret>::namespaced(client.clone(), w.keys_namespace),
            watcher::Config::default().fields(&format!(
                "metadata.name={}",
                tessera_crds::policy_data::secret_name(w.keys_secret)
            )),
            changed.clone(),
            &mut tasks,
        );
        WatchCaches {
            policy_data,
            proxies: per_namespace(client, ns, changed, &mut tasks),
            policies: per_namespace(client, ns, changed, &mut tasks),
            credentials: per_namespace(client, ns, changed, &mut tasks),
            roles: per_namespace(client, ns, changed, &mut tasks),
            secrets,
            config_maps,
            service_accounts,
            keys,
            tasks,
        }
    }

    /// Waits until every cache has listed once (a partial list would give a partial model).
    pub async fn wait_synced(&self) {
        for s in &self.proxies {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.policies {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.credentials {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.roles {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.secrets {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.config_maps {
            let _ = s.wait_until_ready().await;
        }
        for s in self.service_accounts.iter().flatten() {
            let _ = s.wait_until_ready().await;
        }
        let _ = self.keys.wait_until_ready().await;
        let _ = self.policy_data.wait_until_ready().await;
    }

    /// Everything cached, as the model's input.
    pub fn resource_set(&self) -> ResourceSet {
        ResourceSet {
            api_proxies: all(&self.proxies),
            auth_policies: all(&self.policies),
            credentials: all(&self.credentials),
            roles: all(&self.roles),
            secrets: all(&self.secrets),
            config_maps: all(&self.config_maps),
            service_accounts: self.service_accounts.as_ref().map(|stores| all(stores)),
        }
    }

    /// The keys Secret, if it exists.
    pub fn keys_secret(&self) -> Option<Arc<Secret>> {
        self.keys.state().into_iter().next()
    }

    /// The policy-data Secret, if it exists.
    pub fn policy_data_secret(&self) -> Option<Arc<Secret>> {
        self.policy_data.state().into_iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_grows_to_its_cap_jittered_and_resets() {
        use kube::runtime::utils::Backoff as _;
        let mut b = WatchBackoff::default();
        let steps: Vec<Duration> = (&mut b).take(12).collect();
        assert!(steps[0] >= WatchBackoff::MIN / 2 && steps[0] <= WatchBackoff::MIN);
        assert!(steps.iter().all(|d| *d <= WatchBackoff::MAX), "{steps:?}");
        assert!(steps[11] >= WatchBackoff::MAX / 2, "{steps:?}");
        b.reset();
        assert!(b.next().expect("step") <= WatchBackoff::MIN);
    }
}
