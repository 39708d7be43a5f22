//! The I/O around the pure decisions: watch caches, the reconcile loop, writes and Events.
//!
//! One level-triggered loop: any watched change (debounced) or a clock deadline from the last
//! plan starts a pass; the pass decides with [`crate::plan::plan`] and [`crate::keys::plan_keys`]
//! and writes only the differences. Followers keep their caches warm and write nothing.

use crate::backoff::{self, Backoff, Deferred};
use crate::keys::{KeyDecision, KeyPolicy, Stored, plan_keys, signer_ages};
use crate::metrics::Metrics;
use crate::plan::{self, ObjectPlan, Settings, World, Write};
use crate::{FIELD_MANAGER, lease};
use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::{Client, Resource};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_crds::model::Kind;
use tessera_crds::policy_data;
use tessera_crds::secret::VerifierKey;
use tessera_crds::{ApiProxy, AuthPolicy, Credential, Role};
use tessera_keys::{KeySet, KeySetFile, SECRET_DATA_KEY};
use tessera_kube::{Changes, WatchCaches, Watched};
use tokio::sync::watch;

/// What became of one object's writes in a pass.
enum Outcome {
    /// Not tried: backing off, or its namespace is terminating.
    Deferred(Deferred),
    /// Tried.
    Done(Result<Vec<Expect>, WriteFailure>),
}

/// A failed write.
struct WriteFailure {
    message: String,
    /// The namespace refused it because it is being deleted.
    terminating: bool,
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

/// What one attempt to write the key set came to.
enum KeyWrite {
    /// Written, or nothing to write.
    Done(crate::keys::KeyPlan),
    /// Refused with 409; the message says why.
    Conflict(String),
}

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
    client: Client,
    cfg: Config,
    caches: WatchCaches,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
    changed: Arc<Changes>,
    recorder: Recorder,
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
    /// Starts the watch caches.
    pub fn start(client: Client, cfg: Config, metrics: Arc<Metrics>) -> Self {
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
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity),
            },
        );
        Self {
            client,
            cfg,
            caches,
            metrics,
            health: Arc::default(),
            changed,
            recorder,
            backoff: Mutex::default(),
        }
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

    fn key_policy(&self, world: &World) -> KeyPolicy {
        // The longest lifetime of anything a key vouches for, from the policies in force.
        let mut access = tessera_crds::validate::DEFAULT_ACCESS_TTL;
        let mut sealed = tessera_crds::validate::DEFAULT_ACCESS_TTL;
        for p in &world.set.auth_policies {
            let ttl = |s: Option<&str>, d| {
                s.and_then(|s| tessera_crds::duration::parse_duration(s).ok())
                    .unwrap_or(d)
            };
            if !p.spec.access_token.immortal {
                let a = ttl(
                    p.spec.access_token.ttl.as_deref(),
                    tessera_crds::validate::DEFAULT_ACCESS_TTL,
                );
                access = access.max(a);
                sealed = sealed.max(a);
            }
            if p.spec.refresh.enabled {
                sealed = sealed.max(ttl(
                    p.spec.refresh.ttl.as_deref(),
                    tessera_crds::validate::DEFAULT_REFRESH_TTL,
                ));
            }
        }
        KeyPolicy {
            rotation_interval: self.cfg.key_rotation,
            prepublish: self.cfg.key_prepublish,
            retire_delay: access + self.cfg.skew,
            sealed_lifetime: sealed + self.cfg.skew,
        }
    }

    /// One attempt of [`Self::keys_pass`] against `stored_secret`.
    async fn keys_write(
        &self,
        world: &World,
        now: Timestamp,
        stored_secret: Option<&Secret>,
        report: &mut PassReport,
    ) -> Result<KeyWrite, String> {
        let value = stored_secret.map(|s| plan::read_secret_value(s, SECRET_DATA_KEY));
        let stored = match &value {
            None => Stored::Absent,
            Some(v) => Stored::Present(v.as_deref()),
        };
        let policy = self.key_policy(world);
        let kp = plan_keys(stored, now, &policy, &mut |t| KeySet::generate_file(t).ok());
        report.next_wake = kp.next_wake;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.cfg.keys_namespace);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let written = match &kp.decision {
            KeyDecision::Blocked(why) => {
                self.metrics.error("keys_blocked");
                self.metrics.reconciled("KeySet", "error", 1);
                tracing::error!(secret = %format!("{}/{}", self.cfg.keys_namespace, self.cfg.keys_secret), reason = %why, "key set unusable; not rotating and not reconciling until it is fixed");
                if let Some(s) = stored_secret {
                    self.event(&s.metadata, "Secret", "v1", true, "KeySetInvalid", why)
                        .await;
                }
                return Err(why.clone());
            }
            KeyDecision::Keep => {
                self.metrics.reconciled("KeySet", "unchanged", 1);
                report.keys = "unchanged".into();
                return Ok(KeyWrite::Done(kp));
            }
            KeyDecision::Create(file) => {
                let secret = keys_secret(&self.cfg, file, None).map_err(|e| e.to_string())?;
                report.writes += 1;
                self.metrics.writes.inc();
                api.create(&pp, &secret).await.map(|_| {
                    tracing::info!(secret = %self.cfg.keys_secret, "generated the key set");
                    "created".to_owned()
                })
            }
            KeyDecision::Update(file, changes) => {
                let rv = stored_secret.and_then(|s| s.metadata.resource_version.clone());
                let secret = keys_secret(&self.cfg, file, rv).map_err(|e| e.to_string())?;
                report.writes += 1;
                self.metrics.writes.inc();
                // Replace guarded by resourceVersion: of two writers, the second gets a
                // conflict and re-plans from what the first wrote, so no two keys are minted.
                api.replace(&self.cfg.keys_secret, &pp, &secret)
                    .await
                    .map(|_| {
                        tracing::info!(changes = ?changes, "rotated the key set");
                        changes.join("; ")
                    })
            }
        };
        match written {
            Ok(what) => {
                self.metrics.reconciled("KeySet", "written", 1);
                report.keys = what;
                Ok(KeyWrite::Done(kp))
            }
            // 409: AlreadyExists on create, Conflict on a stale resourceVersion.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                self.metrics.reconciled("KeySet", "conflict", 1);
                Ok(KeyWrite::Conflict(e.message.clone()))
            }
            Err(e) => {
                self.metrics.reconciled("KeySet", "error", 1);
                report.errors += 1;
                Err(format!("writing the keys Secret failed: {e}"))
            }
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
    ) -> Result<VerifierKey, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.cfg.keys_namespace);
        let mut stored_secret = self.caches.keys_secret().map(|s| (*s).clone());
        let mut attempt = 0;
        let kp = loop {
            match self
                .keys_write(world, now, stored_secret.as_ref(), report)
                .await?
            {
                KeyWrite::Done(kp) => break kp,
                KeyWrite::Conflict(e) if attempt < KEY_CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::info!(error = %e, attempt, "the key set changed under us; re-reading it from the API");
                    stored_secret = api
                        .get_opt(&self.cfg.keys_secret)
                        .await
                        .map_err(|e| format!("re-reading the keys Secret failed: {e}"))?;
                }
                KeyWrite::Conflict(e) => {
                    return Err(format!("writing the keys Secret kept conflicting: {e}"));
                }
            }
        };
        let file = kp.effective.ok_or("no key set")?;
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
            .map_err(|e| e.to_string())
    }

    /// Copies what AuthPolicies reference (user pools, CA bundles) into the policy-data Secret
    /// token servers read; writes only when the copy differs.
    async fn policy_data_pass(&self, world: &World, report: &mut PassReport) {
        let name = policy_data::secret_name(&self.cfg.keys_secret);
        let doc = policy_data::collect(&world.set);
        let stored = self.caches.policy_data_secret();
        let current = stored
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(policy_data::DATA_KEY));
        if current.is_some_and(|c| c.0 == doc) {
            return;
        }
        if doc.len() > policy_data::MAX_BYTES {
            self.metrics.error("policy_data_too_large");
            let why = format!(
                "the user pools and CA bundles AuthPolicies reference add up to {} bytes, more than the {} a Secret can carry; split large user pools across fewer policies or move users to an external identity provider",
                doc.len(),
                policy_data::MAX_BYTES
            );
            tracing::error!(secret = %name, "{why}");
            self.set_health(|h| h.last_error = Some(why));
            return;
        }
        let mut secret = keys_secret_shell(
            &self.cfg,
            &name,
            stored
                .as_ref()
                .and_then(|s| s.metadata.resource_version.clone()),
        );
        secret.data = Some(BTreeMap::from([(
            policy_data::DATA_KEY.to_owned(),
            k8s_openapi::ByteString(doc),
        )]));
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.cfg.keys_namespace);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        report.writes += 1;
        self.metrics.writes.inc();
        let r = if stored.is_some() {
            api.replace(&name, &pp, &secret).await
        } else {
            api.create(&pp, &secret).await
        };
        match r {
            Ok(_) => tracing::info!(secret = %name, "updated the policy data token servers read"),
            // A conflict or a transient error: the next pass (a watch event or the resync)
            // plans again from what is stored.
            Err(e) => {
                report.errors += 1;
                self.metrics.error("policy_data");
                tracing::warn!(secret = %name, error = %e, "writing the policy data failed; retrying on the next pass");
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
            Err(why) => {
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
                            Err(f) => {
                                b.failed(&key, now);
                                if f.terminating {
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
            self.metrics.error("deferred");
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
    async fn await_caches(&self, expects: &[Expect]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let missing = expects.iter().any(|e| !self.cache_has(e));
            if !missing || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn cache_has(&self, e: &Expect) -> bool {
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
        match e.kind {
            None => find(&s.secrets, &e.namespace, &e.name, &e.rv),
            Some(Kind::Credential) => find(&s.credentials, &e.namespace, &e.name, &e.rv),
            Some(Kind::ApiProxy) => find(&s.proxies, &e.namespace, &e.name, &e.rv),
            Some(Kind::AuthPolicy) => find(&s.policies, &e.namespace, &e.name, &e.rv),
            Some(Kind::Role) => find(&s.roles, &e.namespace, &e.name, &e.rv),
        }
    }

    async fn execute(&self, o: &ObjectPlan) -> Result<Vec<Expect>, WriteFailure> {
        let mut expects = Vec::new();
        for w in &o.writes {
            self.metrics.writes.inc();
            let r = self.write(w).await;
            match r {
                Ok(e) => expects.push(e),
                Err(e) => {
                    let conflict = matches!(&e, kube::Error::Api(s) if s.code == 409);
                    self.metrics
                        .error(if conflict { "conflict" } else { "api" });
                    let terminating = backoff::is_namespace_terminating(&e);
                    let forbidden =
                        !terminating && matches!(&e, kube::Error::Api(s) if s.code == 403);
                    if forbidden {
                        // RBAC refused it: say so on the object, where `kubectl describe` shows
                        // it, not only in the operator's log (the pass goes on with the others).
                        tracing::warn!(object = %o.object, write = w.verb(), error = %e, "forbidden by RBAC; check the operator's Role");
                        let note = format!(
                            "the API server refused the operator's {} write: {e}; grant it in the operator's Role (README: RBAC the chart grants)",
                            w.verb()
                        );
                        self.object_event(o, true, "Forbidden", &note).await;
                    }
                    if conflict {
                        tracing::debug!(object = %o.object, write = w.verb(), "conflict; the next pass re-plans");
                    } else if forbidden {
                        // Logged and recorded above.
                    } else if terminating {
                        tracing::info!(object = %o.object, "namespace is being deleted; no writes there for a while");
                    } else {
                        tracing::warn!(object = %o.object, write = w.verb(), error = %e, "write failed; retrying after a backoff");
                    }
                    return Err(WriteFailure {
                        message: format!("{} failed: {e}", w.verb()),
                        terminating,
                    });
                }
            }
        }
        for ev in &o.events {
            self.object_event(o, ev.warning, &ev.reason, &ev.note).await;
        }
        Ok(expects)
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
        let reference = ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            ..Default::default()
        };
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note.chars().take(1024).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.metrics.writes.inc();
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            self.metrics.error("event");
            tracing::debug!(error = %e, "publishing an Event failed");
            // Events are often the first write a terminating namespace refuses (a Credential's
            // status patch still succeeds): stop writing there too.
            if backoff::is_namespace_terminating(&e)
                && let Some(ns) = &meta.namespace
            {
                self.backoff
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .terminating(ns, Timestamp::now());
            }
        }
    }

    async fn write(&self, w: &Write) -> Result<Expect, kube::Error> {
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        match w {
            Write::CreateSecret(s) => {
                let ns = s.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                let out = api.create(&pp, s).await?;
                tracing::info!(secret = %format!("{ns}/{}", out.metadata.name.as_deref().unwrap_or_default()), "generated Secret created");
                Ok(Expect::of(None, &out.metadata))
            }
            Write::ApplySecret(s) => {
                let ns = s.metadata.namespace.clone().unwrap_or_default();
                let name = s.metadata.name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                let out = api.patch(&name, &apply, &Patch::Apply(&**s)).await?;
                tracing::info!(secret = %format!("{ns}/{name}"), "generated Secret updated");
                Ok(Expect::of(None, &out.metadata))
            }
            Write::Status { object, status } => {
                let body = json!({"apiVersion": plan::API_VERSION, "kind": object.kind.as_str(), "status": status});
                let ns = &*object.namespace;
                let name = &*object.name;
                let meta = match object.kind {
                    Kind::Credential => {
                        Api::<Credential>::namespaced(self.client.clone(), ns)
                            .patch_status(name, &apply, &Patch::Apply(&body))
                            .await?
                            .metadata
                    }
                    Kind::ApiProxy => {
                        Api::<ApiProxy>::namespaced(self.client.clone(), ns)
                            .patch_status(name, &apply, &Patch::Apply(&body))
                            .await?
                            .metadata
                    }
                    Kind::AuthPolicy => {
                        Api::<AuthPolicy>::namespaced(self.client.clone(), ns)
                            .patch_status(name, &apply, &Patch::Apply(&body))
                            .await?
                            .metadata
                    }
                    Kind::Role => {
                        Api::<Role>::namespaced(self.client.clone(), ns)
                            .patch_status(name, &apply, &Patch::Apply(&body))
                            .await?
                            .metadata
                    }
                };
                tracing::debug!(object = %object, "status written");
                Ok(Expect::of(Some(object.kind), &meta))
            }
        }
    }

    /// Runs until `shutdown`: a pass after every (debounced) change, at clock deadlines, and at
    /// least every five minutes; only while `leader` says so.
    pub async fn run(self, mut leader: watch::Receiver<bool>, mut shutdown: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.wait_synced() => {}
            _ = shutdown.changed() => return,
        }
        tracing::info!("watch caches synced");
        let mut next_wake: Option<Timestamp> = None;
        loop {
            let is_leader = *leader.borrow_and_update();
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
            tokio::select! {
                _ = self.changed.notify.notified() => {
                    // Batch a burst of watch events into one pass.
                    tokio::time::sleep(self.cfg.debounce).await;
                }
                _ = tokio::time::sleep(sleep) => {}
                _ = leader.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// A write whose result the caches should show before the next pass.
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

#[derive(Debug)]
struct Expect {
    kind: Option<Kind>,
    namespace: String,
    name: String,
    rv: String,
}

impl Expect {
    fn of(kind: Option<Kind>, meta: &ObjectMeta) -> Self {
        Self {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            rv: meta.resource_version.clone().unwrap_or_default(),
        }
    }
}

fn keys_secret(
    cfg: &Config,
    file: &KeySetFile,
    resource_version: Option<String>,
) -> Result<Secret, serde_json::Error> {
    let json = serde_json::to_vec_pretty(file)?;
    let mut data = BTreeMap::new();
    data.insert(SECRET_DATA_KEY.to_owned(), k8s_openapi::ByteString(json));
    let mut s = keys_secret_shell(cfg, &cfg.keys_secret, resource_version);
    s.data = Some(data);
    Ok(s)
}

/// A Secret in the operator's namespace with the managed-by label.
fn keys_secret_shell(cfg: &Config, name: &str, resource_version: Option<String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(cfg.keys_namespace.clone()),
            labels: Some(BTreeMap::from([(
                plan::MANAGED_BY.0.into(),
                plan::MANAGED_BY.1.into(),
            )])),
            resource_version,
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        ..Default::default()
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
