//! The I/O around the pure decisions: watch caches, the reconcile loop and Events.
//!
//! One level-triggered loop: any watched change (debounced) or a clock deadline from the last
//! plan starts a pass; the pass decides with [`crate::plan`] (objects, key set, policy data) and
//! hands every write to [`crate::apply::Applier`], which checks the Lease before each. Followers
//! keep their caches warm and write nothing.

use crate::apply::{Applier, Written};
use crate::backoff::{Backoff, Deferred};
use crate::error::{Error, ErrorKind};
use crate::lease::{self, Leadership};
use crate::metrics::Metrics;
use crate::plan::key_set::{self, KeyDecision, KeyPolicy, Stored, plan_keys, signer_ages};
use crate::plan::{self, ObjectPlan, Settings, World, policy_data};
use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::{Client, Resource};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_crds::model::Kind;
use tessera_crds::secret::VerifierKey;
use tessera_keys::KeySet;
use tessera_kube::{Changes, WatchCaches, Watched};

/// What became of one object's writes in a pass.
enum Outcome {
    /// Not tried: backing off, or its namespace is terminating.
    Deferred(Deferred),
    /// Tried.
    Done(Result<Vec<Written>, WriteFailure>),
}

/// A failed write.
struct WriteFailure {
    message: String,
    kind: ErrorKind,
}

/// The backoff's name for an object.
fn backoff_key(o: &ObjectPlan) -> String {
    object_key(o.object.kind.as_str(), &o.object.namespace, &o.object.name)
}

fn object_key(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

/// The backoff names of every object in the world (what the backoff may remember).
fn world_keys(world: &World) -> std::collections::HashSet<String> {
    fn keys<'a, K: Resource + 'a>(
        kind: Kind,
        objs: impl IntoIterator<Item = &'a Arc<K>>,
        out: &mut std::collections::HashSet<String>,
    ) {
        for o in objs {
            let m = o.meta();
            out.insert(object_key(
                kind.as_str(),
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default(),
            ));
        }
    }
    let mut out = std::collections::HashSet::new();
    let set = &world.set;
    keys(Kind::Credential, &set.credentials, &mut out);
    keys(Kind::ApiProxy, &set.api_proxies, &mut out);
    keys(Kind::AuthPolicy, &set.auth_policies, &mut out);
    keys(Kind::Role, &set.roles, &mut out);
    out
}

/// Re-reads of the key set after a 409 in one pass, before the pass reports an error.
const KEY_CONFLICT_RETRIES: u32 = 3;

/// Operator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// Namespace of the keys Secret (and the Lease).
    pub keys_namespace: String,
    /// Name of the keys Secret.
    pub keys_secret: String,
    /// Key rotation interval (`None`: never), pre-publication, clock skew.
    pub key_rotation: Option<Duration>,
    /// How long a new signing key is in the JWKS before it signs.
    pub key_prepublish: Duration,
    /// Allowed clock skew between token servers and validators.
    pub skew: Duration,
    /// What goes into generated Secrets.
    pub settings: Settings,
    /// Leader election; `None` acts as leader always (one replica only).
    pub lease: Option<lease::LeaseConfig>,
    /// Concurrent writes.
    pub concurrency: usize,
    /// Quiet time after a change before a pass starts (batches bursts of events).
    pub debounce: Duration,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Every watch cache has listed once.
    pub synced: bool,
    /// This replica leads.
    pub leader: bool,
    /// Passes completed.
    pub passes: u64,
    /// When the last pass ended.
    pub last_pass: Option<String>,
    /// Writes in the last pass.
    pub last_writes: usize,
    /// The last error, if the last pass had one.
    pub last_error: Option<String>,
    /// The key set's state: `ok`, `absent` or why it is blocked.
    pub keys: String,
}

/// The running operator.
pub struct Operator {
    cfg: Config,
    caches: WatchCaches,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
    changed: Arc<Changes>,
    applier: Applier,
    backoff: Mutex<Backoff>,
}

/// Outcome of one pass, for tests and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct PassReport {
    /// Objects that needed writes.
    pub objects_written: usize,
    /// Writes made.
    pub writes: usize,
    /// Writes that failed.
    pub errors: usize,
    /// The key set decision, in words.
    pub keys: String,
    /// When to look again by the clock.
    pub next_wake: Option<Timestamp>,
    /// Objects not written this pass: their last write failed and they are backing off, or
    /// their namespace is being deleted.
    pub deferred: usize,
}

impl Operator {
    /// Starts the watch caches. The operator writes as leader for good until
    /// [`Self::set_leadership`] or [`Self::run`] gives it an election to follow.
    pub fn start(client: Client, cfg: Config, metrics: Arc<Metrics>) -> Self {
        metrics
            .rotation_interval
            .set(cfg.key_rotation.map_or(0, |d| d.as_secs() as i64));
        let changed = Arc::new(Changes::default());
        let caches = WatchCaches::start(
            &client,
            Watched {
                namespaces: &cfg.namespaces,
                keys_namespace: &cfg.keys_namespace,
                keys_secret: &cfg.keys_secret,
                secrets_and_config_maps: true,
            },
            &changed,
        );
        let identity = cfg
            .lease
            .as_ref()
            .map(|l| l.identity.clone())
            .unwrap_or_else(|| "tessera-operator".into());
        let applier = Applier::new(
            client.clone(),
            Leadership::always(),
            metrics.clone(),
            identity,
        );
        Self {
            cfg,
            caches,
            metrics,
            health: Arc::default(),
            changed,
            applier,
            backoff: Mutex::default(),
        }
    }

    /// Writes only while `leadership` says this replica leads, checked before every write.
    pub fn set_leadership(&mut self, leadership: Leadership) {
        self.applier.set_leadership(leadership);
    }

    /// Writes the audit trail into `audit`.
    pub fn set_audit(&mut self, audit: Arc<crate::audit::Audit>) {
        self.applier.set_audit(audit);
    }

    /// The health shared with the admin server.
    pub fn health(&self) -> Arc<Mutex<Health>> {
        self.health.clone()
    }

    /// Waits until every cache has listed once.
    pub async fn wait_synced(&self) {
        self.caches.wait_synced().await;
        self.set_health(|h| h.synced = true);
    }

    fn set_health(&self, f: impl FnOnce(&mut Health)) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut h);
    }

    /// What the caches hold now.
    pub fn world(&self) -> World {
        World {
            set: self.caches.resource_set(),
        }
    }

    /// Keys: decide and write. Returns the verifier key in force, or why there is none.
    ///
    /// Plans from the watch cache. A write refused with 409 (someone wrote since the cache
    /// saw it, or the cache lags after an API outage) re-reads the Secret from the API and
    /// re-plans from that, a bounded number of times: waiting for the watch instead cost 20 s
    /// of conflicts after an outage (issue 20). The resourceVersion guard still means two
    /// writers never both add a key: the loser re-plans from what the winner wrote.
    async fn keys_pass(
        &self,
        world: &World,
        now: Timestamp,
        report: &mut PassReport,
    ) -> Result<VerifierKey, Error> {
        let cfg = &self.cfg;
        let policy =
            KeyPolicy::for_policies(&world.set, cfg.key_rotation, cfg.key_prepublish, cfg.skew);
        let mut stored = self.caches.keys_secret().map(|s| (*s).clone());
        let mut attempt = 0;
        let kp = loop {
            let value = key_set::stored_value(stored.as_ref());
            let kp = plan_keys(
                Stored::of(stored.as_ref(), &value),
                now,
                &policy,
                &mut |t| KeySet::generate_file(t).ok(),
            );
            report.next_wake = kp.next_wake;
            let write = match key_set::key_set_write(
                &kp.decision,
                &cfg.keys_namespace,
                &cfg.keys_secret,
                stored.as_ref(),
            ) {
                Ok(w) => w,
                Err(e) => {
                    self.metrics.error(e.kind());
                    self.metrics.reconciled("KeySet", "error", 1);
                    tracing::error!(secret = %format!("{}/{}", cfg.keys_namespace, cfg.keys_secret), reason = %e, "key set unusable; not rotating and not reconciling until it is fixed");
                    if let Some(s) = &stored {
                        self.event(
                            &s.metadata,
                            "Secret",
                            "v1",
                            true,
                            e.kind().reason(),
                            &e.to_string(),
                        )
                        .await;
                    }
                    return Err(e);
                }
            };
            let Some(write) = write else {
                self.metrics.reconciled("KeySet", "unchanged", 1);
                report.keys = "unchanged".into();
                break kp;
            };
            report.writes += 1;
            match self.applier.apply(&write).await {
                Ok(_) => {
                    self.metrics.reconciled("KeySet", "written", 1);
                    report.keys = match &kp.decision {
                        KeyDecision::Update(_, changes) => {
                            tracing::info!(changes = ?changes, "rotated the key set");
                            changes.join("; ")
                        }
                        _ => {
                            tracing::info!(secret = %cfg.keys_secret, "generated the key set");
                            "created".into()
                        }
                    };
                    let object = format!("Secret {}/{}", cfg.keys_namespace, cfg.keys_secret);
                    let (event, why) = match &kp.decision {
                        KeyDecision::Update(..) => ("keys.rotated", "KeySetRotated"),
                        _ => ("keys.generated", "KeySetGenerated"),
                    };
                    self.applier
                        .audit()
                        .record(event, "success", &object, why, &report.keys);
                    break kp;
                }
                // 409: AlreadyExists on create, Conflict on a stale resourceVersion.
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    self.metrics.reconciled("KeySet", "conflict", 1);
                    if attempt == KEY_CONFLICT_RETRIES {
                        return Err(Error::KeySetConflicts(e.to_string()));
                    }
                    attempt += 1;
                    tracing::info!(error = %e, attempt, "the key set changed under us; re-reading it from the API");
                    let api: Api<Secret> =
                        Api::namespaced(self.applier.client().clone(), &cfg.keys_namespace);
                    stored = api
                        .get_opt(&cfg.keys_secret)
                        .await
                        .map_err(|source| Error::Read {
                            what: "the keys Secret".into(),
                            source,
                        })?;
                }
                Err(e) => {
                    self.metrics.reconciled("KeySet", "error", 1);
                    report.errors += 1;
                    return Err(e);
                }
            }
        };
        let file = kp
            .effective
            .ok_or_else(|| Error::KeySetBlocked("no key set".into()))?;
        for (alg, age) in signer_ages(&file, now) {
            self.metrics
                .key_age
                .get_or_create(&crate::metrics::AlgLabels {
                    alg: alg.as_str().into(),
                })
                .set(age);
        }
        KeySet::from_file(&file)
            .map(|k| k.verifier_key().clone())
            .map_err(|e| Error::KeySetBlocked(e.to_string()))
    }

    /// Copies what AuthPolicies reference (user pools, CA bundles) into the policy-data Secret
    /// token servers read; writes only when the copy differs.
    async fn policy_data_pass(&self, world: &World, report: &mut PassReport) {
        let stored = self.caches.policy_data_secret();
        let planned = policy_data::plan(
            &world.set,
            &self.cfg.keys_namespace,
            &self.cfg.keys_secret,
            stored.as_deref(),
        );
        let write = match planned {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => {
                self.metrics.error(e.kind());
                tracing::error!(secret = %tessera_crds::policy_data::secret_name(&self.cfg.keys_secret), "{e}");
                self.set_health(|h| h.last_error = Some(e.to_string()));
                return;
            }
        };
        report.writes += 1;
        match self.applier.apply(&write).await {
            Ok(_) => tracing::info!("updated the policy data token servers read"),
            // A conflict or a transient error: the next pass (a watch event or the resync)
            // plans again from what is stored.
            Err(e) => {
                report.errors += 1;
                tracing::warn!(error = %e, "writing the policy data failed; retrying on the next pass");
            }
        }
    }

    /// One pass: keys, then every object.
    pub async fn pass(&self) -> PassReport {
        let started = std::time::Instant::now();
        let now = Timestamp::now();
        let world = self.world();
        let mut report = PassReport::default();
        let key = match self.keys_pass(&world, now, &mut report).await {
            Ok(k) => {
                self.set_health(|h| h.keys = "ok".into());
                k
            }
            Err(e) => {
                let why = e.to_string();
                self.set_health(|h| {
                    h.keys = why.clone();
                    h.last_error = Some(why.clone());
                });
                report.keys = why;
                return report;
            }
        };
        self.policy_data_pass(&world, &mut report).await;
        let plan = plan::plan(
            &world,
            &key,
            &self.cfg.settings,
            now,
            &mut plan::RandomSecrets,
        );
        report.next_wake = match (report.next_wake, plan.next_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut written_by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
        for o in &plan.objects {
            *written_by_kind.entry(o.object.kind.as_str()).or_default() += 1;
        }
        let existing = world_keys(&world);
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| existing.contains(k), now);
        // The backoff is checked as each object's turn comes, so the first "namespace is
        // being terminated" stops the writes queued behind it in the same pass.
        let results: Vec<(ObjectPlan, Outcome)> = futures::stream::iter(plan.objects)
            .map(|o| async move {
                let key = backoff_key(&o);
                let check = self
                    .backoff
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .check(&o.object.namespace, &key, now);
                let r = match check {
                    Err(d) => Outcome::Deferred(d),
                    Ok(()) => {
                        let r = self.execute(&o).await;
                        let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
                        match &r {
                            Ok(_) => b.succeeded(&key),
                            // Not leading is not the object's failure: the next leader writes it
                            // without a backoff.
                            Err(f) if f.kind == ErrorKind::NotLeader => {}
                            Err(f) => {
                                b.failed(&key, now);
                                if f.kind == ErrorKind::NamespaceTerminating {
                                    b.terminating(&o.object.namespace, now);
                                }
                            }
                        }
                        Outcome::Done(r)
                    }
                };
                (o, r)
            })
            .buffer_unordered(self.cfg.concurrency.max(1))
            .collect()
            .await;
        let mut expects = Vec::new();
        let mut errors_by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut last_error = None;
        for (o, r) in results {
            match r {
                Outcome::Deferred(d) => {
                    report.deferred += 1;
                    *written_by_kind.entry(o.object.kind.as_str()).or_default() -= 1;
                    report.next_wake =
                        Some(report.next_wake.map_or(d.until(), |w| w.min(d.until())));
                }
                Outcome::Done(Ok(e)) => {
                    report.objects_written += 1;
                    report.writes += e.len();
                    expects.extend(e);
                }
                Outcome::Done(Err(f)) => {
                    report.objects_written += 1;
                    report.errors += 1;
                    *errors_by_kind.entry(o.object.kind.as_str()).or_default() += 1;
                    last_error = Some(format!("{}: {}", o.object, f.message));
                }
            }
        }
        if report.deferred > 0 {
            tracing::info!(
                deferred = report.deferred,
                "objects not written this pass (backing off after failed writes, or their namespace is being deleted)"
            );
            self.metrics.error(ErrorKind::Deferred);
        }
        for (kind, seen) in &plan.seen {
            let written = written_by_kind.get(kind).copied().unwrap_or(0);
            let errors = errors_by_kind.get(kind).copied().unwrap_or(0);
            self.metrics
                .reconciled(kind, "unchanged", (*seen as u64).saturating_sub(written));
            self.metrics
                .reconciled(kind, "written", written.saturating_sub(errors));
            self.metrics.reconciled(kind, "error", errors);
        }
        self.await_caches(&expects).await;
        self.metrics
            .pass_seconds
            .observe(started.elapsed().as_secs_f64());
        let (writes, deferred) = (report.writes, report.deferred);
        self.set_health(|h| {
            h.passes += 1;
            h.last_pass = Some(Timestamp::now().to_string());
            h.last_writes = writes;
            // Objects backing off after a failure are still failing: keep their error visible
            // on /readyz until a pass writes without one.
            if last_error.is_some() || deferred == 0 {
                h.last_error = last_error;
            }
        });
        report
    }

    /// Waits (briefly) until the caches show what this pass wrote, so the next pass does not
    /// decide from a stale view and write the same thing twice.
    async fn await_caches(&self, expects: &[Written]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let missing = expects.iter().any(|e| !self.cache_has(e));
            if !missing || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn cache_has(&self, e: &Written) -> bool {
        fn find<K: Resource + Clone>(stores: &[Store<K>], ns: &str, name: &str, rv: &str) -> bool
        where
            K::DynamicType: Eq + std::hash::Hash + Clone + Default,
        {
            let r = reflector::ObjectRef::<K>::new(name).within(ns);
            stores.iter().any(|s| {
                s.get(&r)
                    .is_some_and(|o| rv_reached(o.meta().resource_version.as_deref(), rv))
            })
        }
        let s = &self.caches;
        let (ns, name, rv) = (&*e.namespace, &*e.name, &*e.resource_version);
        match e.kind {
            None => find(&s.secrets, ns, name, rv),
            Some(Kind::Credential) => find(&s.credentials, ns, name, rv),
            Some(Kind::ApiProxy) => find(&s.proxies, ns, name, rv),
            Some(Kind::AuthPolicy) => find(&s.policies, ns, name, rv),
            Some(Kind::Role) => find(&s.roles, ns, name, rv),
        }
    }

    async fn execute(&self, o: &ObjectPlan) -> Result<Vec<Written>, WriteFailure> {
        let mut written = Vec::new();
        for w in &o.writes {
            let e = match self.applier.apply(w).await {
                Ok(x) => {
                    written.push(x);
                    continue;
                }
                Err(e) => e,
            };
            let kind = e.kind();
            match kind {
                ErrorKind::Forbidden => {
                    // RBAC refused it: say so on the object, where `kubectl describe` shows it,
                    // not only in the operator's log (the pass goes on with the others).
                    tracing::warn!(object = %o.object, write = w.verb(), error = %e, "forbidden by RBAC; check the operator's Role");
                    let note = format!(
                        "the API server refused the operator's {} write: {e}; grant it in the operator's Role (README: RBAC the chart grants)",
                        w.verb()
                    );
                    self.object_event(o, true, kind.reason(), &note).await;
                }
                ErrorKind::Conflict => {
                    tracing::debug!(object = %o.object, write = w.verb(), "conflict; the next pass re-plans")
                }
                ErrorKind::NamespaceTerminating => {
                    tracing::info!(object = %o.object, "namespace is being deleted; no writes there for a while")
                }
                ErrorKind::NotLeader => {
                    tracing::info!(object = %o.object, "leadership ended during the pass; the leader writes it")
                }
                _ => {
                    tracing::warn!(object = %o.object, write = w.verb(), error = %e, "write failed; retrying after a backoff")
                }
            }
            return Err(WriteFailure {
                message: e.to_string(),
                kind,
            });
        }
        for ev in &o.events {
            self.object_event(o, ev.warning, &ev.reason, &ev.note).await;
        }
        Ok(written)
    }

    /// An Event about the object `o` plans for.
    async fn object_event(&self, o: &ObjectPlan, warning: bool, reason: &str, note: &str) {
        let meta = ObjectMeta {
            name: Some(o.object.name.to_string()),
            namespace: Some(o.object.namespace.to_string()),
            uid: o.uid.clone(),
            ..Default::default()
        };
        self.event(
            &meta,
            o.object.kind.as_str(),
            plan::API_VERSION,
            warning,
            reason,
            note,
        )
        .await;
    }

    async fn event(
        &self,
        meta: &ObjectMeta,
        kind: &str,
        api_version: &str,
        warning: bool,
        reason: &str,
        note: &str,
    ) {
        let Err(e) = self
            .applier
            .event(meta, kind, api_version, reason, note, warning)
            .await
        else {
            return;
        };
        tracing::debug!(error = %e, "publishing an Event failed");
        // Events are often the first write a terminating namespace refuses (a Credential's
        // status patch still succeeds): stop writing there too.
        if e.kind() == ErrorKind::NamespaceTerminating
            && let Some(ns) = &meta.namespace
        {
            self.backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .terminating(ns, Timestamp::now());
        }
    }

    /// Runs until `shutdown`: a pass after every (debounced) change, at clock deadlines, and at
    /// least every five minutes; only while `leadership` says this replica leads, which every
    /// write checks again.
    pub async fn run(
        mut self,
        leadership: Leadership,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        self.set_leadership(leadership.clone());
        let mut leader = leadership;
        tokio::select! {
            _ = self.wait_synced() => {}
            _ = shutdown.changed() => return,
        }
        tracing::info!("watch caches synced");
        let mut next_wake: Option<Timestamp> = None;
        loop {
            let is_leader = leader.leads();
            self.metrics.leader.set(i64::from(is_leader));
            self.set_health(|h| h.leader = is_leader);
            if is_leader {
                let r = self.pass().await;
                next_wake = r.next_wake;
                if r.writes > 0 || r.errors > 0 {
                    tracing::info!(objects = r.objects_written, writes = r.writes, errors = r.errors, keys = %r.keys, "reconcile pass");
                }
                if r.errors > 0 {
                    // Back off a little instead of spinning on a failing write.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.changed.notify.notify_one();
                }
            }
            let sleep = next_wake
                .map(|t| {
                    let d = t.duration_since(Timestamp::now());
                    Duration::from_millis(d.as_millis().clamp(0, 300_000) as u64)
                })
                .unwrap_or(Duration::from_secs(300));
            // Leading ends at the renew deadline unless the election renews: look again then,
            // so /readyz and the leader gauge do not claim a leadership that lapsed.
            let lapses = leader
                .until()
                .filter(|_| is_leader)
                .map(tokio::time::Instant::into_std);
            tokio::select! {
                _ = self.changed.notify.notified() => {
                    // Batch a burst of watch events into one pass.
                    tokio::time::sleep(self.cfg.debounce).await;
                }
                _ = tokio::time::sleep(sleep) => {}
                _ = leader.changed() => {}
                _ = async {
                    match lapses {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// True if a cached object's resourceVersion is the one written or a later one. A later write
/// by someone else (a user, a token server's revocation) must count, or the pass would wait out
/// its deadline. resourceVersions are etcd revisions on real API servers; anything that is not
/// a number is compared for equality only.
fn rv_reached(cached: Option<&str>, written: &str) -> bool {
    match (cached.map(str::parse::<u64>), written.parse::<u64>()) {
        (Some(Ok(c)), Ok(w)) => c >= w,
        _ => cached == Some(written),
    }
}

#[cfg(test)]
mod tests {
    use super::rv_reached;

    #[test]
    fn a_later_resource_version_counts_as_seen() {
        assert!(rv_reached(Some("42"), "42"));
        assert!(rv_reached(Some("43"), "42"), "someone wrote after us");
        assert!(!rv_reached(Some("41"), "42"), "the cache is behind");
        assert!(!rv_reached(None, "42"));
        assert!(rv_reached(Some("opaque"), "opaque"));
        assert!(!rv_reached(Some("other"), "opaque"));
    }
}
