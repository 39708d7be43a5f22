//! What the operator should write, decided from what it sees: the pure core of the reconciler.
//!
//! [`plan`] takes every watched object (the four kinds, Secrets and ConfigMaps), the verifier key
//! and the clock, and returns the writes that bring the cluster to the desired state: generated
//! Secrets (create, repair, rotate, re-own) and status on every resource, each with the Events
//! to publish once it succeeded. It returns nothing for an object already in its desired state,
//! which is what keeps a steady cluster at zero writes.
//!
//! Status depends on the whole world (a client_id is contested, a Role vanished), so a pass
//! resolves the model once for all objects ([`tessera_crds::model::resolve`], O(n)) instead of
//! once per object.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tessera_crds::api_proxy::ApiProxyStatus;
use tessera_crds::auth_policy::AuthPolicyStatus;
use tessera_crds::auth_policy::Management;
use tessera_crds::common::PublishedVerifier;
use tessera_crds::common::SecretKeyRef;
use tessera_crds::conditions;
use tessera_crds::credential::CredentialStatus;
use tessera_crds::credential::DeletionPolicy;
use tessera_crds::duration::parse_duration;
use tessera_crds::model::{Kind, ObjectRef, Problem, Reason, Report, ResourceSet, resolve};
use tessera_crds::role::RoleStatus;
use tessera_crds::secret::{CLIENT_SECRET_KEY, Verifier, VerifierKey};
use tessera_crds::validate::DEFAULT_GRACE_PERIOD;

/// Label on every Secret the operator generates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tessera-operator");
/// Label naming the Credential a generated Secret belongs to.
pub const CREDENTIAL_LABEL: &str = "tessera.dev/credential";
/// Label naming the ApiProxy a generated proxy key Secret belongs to.
pub const API_PROXY_LABEL: &str = "tessera.dev/api-proxy";
/// Annotation on a generated Secret: when its secret was last generated.
pub const ROTATED_AT: &str = "tessera.dev/rotated-at";
/// Annotation on a generated Secret: the last on-demand rotation request it fulfilled.
pub const ROTATION_REQUEST: &str = "tessera.dev/rotation-request";
/// Annotation a user sets (to any new value) on a Credential or ApiProxy to rotate its secret now.
pub const ROTATE_SECRET: &str = "tessera.dev/rotate-secret";
/// Data key of the client_id in a generated Secret.
pub const CLIENT_ID_KEY: &str = "client_id";
/// Data key of the token endpoint URL in a generated Secret.
pub const TOKEN_ENDPOINT_KEY: &str = "token_endpoint";
/// Length of a generated secret: 32 random bytes, unpadded base64url.
pub const GENERATED_SECRET_LEN: usize = 43;
/// The API group/version of the four kinds.
pub use tessera_crds::manifest::API_VERSION;

/// Settings a pass needs besides the objects.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The token endpoint written into generated Secrets.
    pub token_endpoint: String,
}

/// Everything the operator sees.
#[derive(Debug, Default, Clone)]
pub struct World {
    /// The four kinds, Secrets and ConfigMaps from the watch caches.
    pub set: ResourceSet,
}

/// One write to the API server.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create a Secret; fails (and is retried next pass) if one appeared meanwhile.
    CreateSecret(Box<Secret>),
    /// Update an existing generated Secret (server-side apply, guarded by its resourceVersion).
    ApplySecret(Box<Secret>),
    /// Server-side apply of an object's whole status.
    Status {
        /// The object.
        object: ObjectRef,
        /// The status, as JSON.
        status: Value,
    },
}

impl Write {
    /// A short name for metrics and logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Write::CreateSecret(_) => "create_secret",
            Write::ApplySecret(_) => "apply_secret",
            Write::Status { .. } => "status",
        }
    }
}

/// An Event to publish about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNote {
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// CamelCase reason, e.g. `SecretRotated`.
    pub reason: String,
    /// What happened, for `kubectl describe`. Never a secret.
    pub note: String,
}

/// The writes for one object, executed in order; a failure stops the rest (next pass retries).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectPlan {
    /// The object the writes are about (also what Events are attached to).
    pub object: ObjectRef,
    /// Its uid, for Event references.
    pub uid: Option<String>,
    /// The writes, in order.
    pub writes: Vec<Write>,
    /// Events to publish once all writes succeeded.
    pub events: Vec<EventNote>,
}

/// The outcome of a pass.
#[derive(Debug, Default)]
pub struct Plan {
    /// Objects that need writes.
    pub objects: Vec<ObjectPlan>,
    /// Objects looked at, by kind (for metrics: those without writes are "unchanged").
    pub seen: BTreeMap<&'static str, usize>,
    /// The earliest time the clock alone changes the desired state (a rotation falls due, a
    /// grace period ends, a Credential expires).
    pub next_wake: Option<Timestamp>,
}

impl Plan {
    fn wake_at(&mut self, t: Timestamp) {
        self.next_wake = Some(self.next_wake.map_or(t, |w| w.min(t)));
    }
}

/// A source of new secrets (random in production, scripted in tests).
pub trait SecretSource {
    /// A new secret: 32 random bytes, unpadded base64url.
    fn new_secret(&mut self) -> String;
}

/// Generated secrets from the system CSPRNG.
pub struct RandomSecrets;

impl SecretSource for RandomSecrets {
    fn new_secret(&mut self) -> String {
        let mut b = [0u8; 32];
        // The system RNG failing is not recoverable; aws-lc aborts on it anyway.
        aws_lc_rs::rand::fill(&mut b).unwrap_or_else(|_| std::process::abort());
        URL_SAFE_NO_PAD.encode(b)
    }
}

fn ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `now` to whole seconds, as the API server stores `metav1.Time`, so what is read back equals
/// what was written.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// When a replaced secret stops working: `grace` after clients can first read its successor,
/// never earlier. `now` is the pass's clock truncated to whole seconds (up to 1 s early), and the
/// new Secret is written after the status that publishes this end (a few ms, more on a loaded
/// API server), so the end is pushed 2 s out: a grace period may run a little long, never short
/// (issue 20: on a real API server a 4 s grace ended 3.4 s after the new secret appeared).
fn grace_end(now: Timestamp, grace: Duration) -> Timestamp {
    let margin = SignedDuration::from_secs(2);
    let grace = SignedDuration::try_from(grace).unwrap_or_default();
    now.checked_add(grace.saturating_add(margin)).unwrap_or(now)
}

fn ceil_seconds(t: Timestamp) -> Timestamp {
    let up = i64::from(t.subsec_nanosecond() > 0);
    Timestamp::from_second(t.as_second() + up).unwrap_or(t)
}

fn ns_name(meta: &ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// A client_id for an object that has none: its name and a hash of its uid, stable for the
/// object's life and different for a new object of the same name.
pub fn generated_client_id(meta: &ObjectMeta) -> Option<String> {
    let uid = meta.uid.as_deref()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, uid.as_bytes());
    let hex: String = digest.as_ref()[..5]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(format!("{}-{hex}", meta.name.as_deref()?))
}

/// Who a generated Secret belongs to.
#[derive(Clone, Copy)]
struct Owner<'a> {
    kind: Kind,
    meta: &'a ObjectMeta,
    label: &'static str,
}

impl Owner<'_> {
    fn is_ours(&self, s: &Secret) -> bool {
        let labels = s.metadata.labels.as_ref();
        let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        get(MANAGED_BY.0) == Some(MANAGED_BY.1) && get(self.label) == self.meta.name.as_deref()
    }

    fn owner_ref(&self) -> Option<OwnerReference> {
        Some(OwnerReference {
            api_version: API_VERSION.into(),
            kind: self.kind.as_str().into(),
            name: self.meta.name.clone()?,
            uid: self.meta.uid.clone()?,
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
    }
}

/// What a generated secret should look like, besides its value.
struct SecretShape<'a> {
    owner: Owner<'a>,
    name: String,
    client_id: String,
    orphan: bool,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    rotation_interval: Option<Duration>,
    grace: Duration,
}

fn secret_value(s: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.as_bytes().to_vec());
    }
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
}

fn is_generated_form(v: &[u8]) -> bool {
    v.len() == GENERATED_SECRET_LEN
        && v.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// The outcome for one generated secret: the value in effect, verifiers and writes.
struct SecretOutcome {
    value: Option<String>,
    writes_before_status: Vec<Write>,
    writes_after_status: Vec<Write>,
    events: Vec<EventNote>,
    /// Verifier of the secret that stopped being current, with the end of its grace period.
    retired: Option<Timestamp>,
    conflict: bool,
}

fn build_secret(
    shape: &SecretShape<'_>,
    settings: &Settings,
    value: &str,
    existing: Option<&Secret>,
    rotated_at: String,
    request: Option<&str>,
) -> Secret {
    let mut labels = shape.labels.clone();
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.insert(
        shape.owner.label.into(),
        shape.owner.meta.name.clone().unwrap_or_default(),
    );
    let mut annotations = shape.annotations.clone();
    annotations.insert(ROTATED_AT.into(), rotated_at);
    if let Some(r) = request {
        annotations.insert(ROTATION_REQUEST.into(), r.into());
    }
    let (ns, _) = ns_name(shape.owner.meta);
    let mut data = BTreeMap::new();
    data.insert(
        CLIENT_ID_KEY.to_owned(),
        ByteString(shape.client_id.clone().into_bytes()),
    );
    data.insert(
        CLIENT_SECRET_KEY.to_owned(),
        ByteString(value.as_bytes().to_vec()),
    );
    data.insert(
        TOKEN_ENDPOINT_KEY.to_owned(),
        ByteString(settings.token_endpoint.clone().into_bytes()),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(shape.name.clone()),
            namespace: Some(ns.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: if shape.orphan {
                Some(Vec::new())
            } else {
                shape.owner.owner_ref().map(|r| vec![r])
            },
            resource_version: existing.and_then(|e| e.metadata.resource_version.clone()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

fn plan_secret(
    shape: &SecretShape<'_>,
    existing: Option<&Secret>,
    previously_published: bool,
    settings: &Settings,
    now: Timestamp,
    secrets: &mut dyn SecretSource,
    plan: &mut Plan,
) -> SecretOutcome {
    let mut out = SecretOutcome {
        value: None,
        writes_before_status: Vec::new(),
        writes_after_status: Vec::new(),
        events: Vec::new(),
        retired: None,
        conflict: false,
    };
    let owner_annotations = shape.owner.meta.annotations.as_ref();
    let request = owner_annotations
        .and_then(|a| a.get(ROTATE_SECRET))
        .filter(|v| !v.is_empty())
        .map(String::as_str);
    let what = format!("Secret {}", shape.name);
    let Some(existing) = existing else {
        let value = secrets.new_secret();
        let secret = build_secret(shape, settings, &value, None, ts(now), request);
        out.writes_before_status
            .push(Write::CreateSecret(Box::new(secret)));
        if previously_published {
            // It existed and was deleted: a repair. Clients still holding the old secret keep
            // working for the grace period.
            out.events.push(EventNote {
                warning: true,
                reason: "SecretRepaired".into(),
                note: format!("{what} was deleted; generated a new secret into it. The previous secret works for the grace period"),
            });
            let end = grace_end(now, shape.grace);
            out.retired = Some(end);
            plan.wake_at(end);
        } else {
            out.events.push(EventNote {
                warning: false,
                reason: "SecretGenerated".into(),
                note: format!("generated a client secret into {what}"),
            });
        }
        out.value = Some(value);
        return out;
    };
    if !shape.owner.is_ours(existing) {
        out.conflict = true;
        return out;
    }
    let current = secret_value(existing, CLIENT_SECRET_KEY).filter(|v| is_generated_form(v));
    let ann = existing.metadata.annotations.as_ref();
    let rotated_at = ann
        .and_then(|a| a.get(ROTATED_AT))
        .and_then(|t| t.parse::<Timestamp>().ok())
        .or_else(|| existing.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let fulfilled = ann
        .and_then(|a| a.get(ROTATION_REQUEST))
        .map(String::as_str);
    let due_by_interval = shape.rotation_interval.and_then(|i| {
        let due = rotated_at
            .checked_add(SignedDuration::try_from(i).ok()?)
            .ok()?;
        if due > now {
            plan.wake_at(due);
            None
        } else {
            Some(())
        }
    });
    let due_on_demand = request.is_some() && request != fulfilled;
    let (value, reason) = match current {
        None => (
            secrets.new_secret(),
            Some((
                true,
                "SecretRepaired",
                format!(
                    "{what} had no valid client_secret (deleted or edited); generated a new one. The previous secret works for the grace period"
                ),
            )),
        ),
        Some(_) if due_on_demand => (
            secrets.new_secret(),
            Some((
                false,
                "SecretRotated",
                format!(
                    "rotated the secret in {what} on request; the previous one works for the grace period"
                ),
            )),
        ),
        Some(_) if due_by_interval.is_some() => (
            secrets.new_secret(),
            Some((
                false,
                "SecretRotated",
                format!(
                    "rotated the secret in {what} on its interval; the previous one works for the grace period"
                ),
            )),
        ),
        Some(v) => (String::from_utf8(v).unwrap_or_default(), None),
    };
    match reason {
        Some((warning, reason, note)) => {
            let secret = build_secret(
                shape,
                settings,
                &value,
                Some(existing),
                ts(now),
                request.or(fulfilled),
            );
            // Status first: the new verifier and the old one's grace period are published
            // before clients can read the new secret, and a failed Secret write loses nothing.
            out.writes_after_status
                .push(Write::ApplySecret(Box::new(secret)));
            out.events.push(EventNote {
                warning,
                reason: reason.into(),
                note,
            });
            let end = grace_end(now, shape.grace);
            out.retired = Some(end);
            plan.wake_at(end);
        }
        None => {
            // Same value: only the shape may need repair (keys, labels, owner).
            let desired = build_secret(
                shape,
                settings,
                &value,
                Some(existing),
                ann.and_then(|a| a.get(ROTATED_AT))
                    .cloned()
                    .unwrap_or_else(|| ts(rotated_at)),
                fulfilled,
            );
            if !shape_matches(existing, &desired) {
                out.writes_before_status
                    .push(Write::ApplySecret(Box::new(desired)));
                out.events.push(EventNote {
                    warning: true,
                    reason: "SecretRepaired".into(),
                    note: format!("restored the keys, labels and owner of {what}; the secret itself is unchanged"),
                });
            }
        }
    }
    out.value = Some(value);
    out
}

/// True if `existing` already has everything `desired` sets (other managers' labels may stay).
fn shape_matches(existing: &Secret, desired: &Secret) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let data_ok = desired
        .data
        .iter()
        .flatten()
        .all(|(k, v)| secret_value(existing, k).as_deref() == Some(v.0.as_slice()));
    let owners = |s: &Secret| s.metadata.owner_references.clone().unwrap_or_default();
    data_ok
        && subset(&desired.metadata.labels, &existing.metadata.labels)
        && subset(
            &desired.metadata.annotations,
            &existing.metadata.annotations,
        )
        && owners(existing) == owners(desired)
}

/// Desired verifiers: the current secret's, then earlier ones still in their grace period.
fn verifiers(
    key: &VerifierKey,
    binding: &str,
    current: Option<&[u8]>,
    published: &[PublishedVerifier],
    retired_until: Option<Timestamp>,
    now: Timestamp,
    plan: &mut Plan,
) -> Vec<PublishedVerifier> {
    let Some(current) = current else {
        return Vec::new();
    };
    let cur = key.verifier(binding, current).to_published();
    let mut out = vec![PublishedVerifier {
        verifier: cur.clone(),
        not_after: None,
    }];
    let mut seen = HashSet::from([cur]);
    if let Some(until) = retired_until
        && let Some(old) = published.iter().find(|p| p.not_after.is_none())
        && seen.insert(old.verifier.clone())
    {
        out.push(PublishedVerifier {
            verifier: old.verifier.clone(),
            // Rounded up: `metav1.Time` has whole seconds, and a grace period must not shrink.
            not_after: Some(ts(ceil_seconds(until))),
        });
    }
    for p in published {
        let Some(end) = p
            .not_after
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        if end > now
            && Verifier::from_published(&p.verifier).is_some()
            && seen.insert(p.verifier.clone())
        {
            plan.wake_at(end);
            out.push(p.clone());
        }
    }
    out
}

fn secret_index(set: &ResourceSet) -> HashMap<(&str, &str), &Secret> {
    set.secrets
        .iter()
        .map(|s| (ns_name(&s.metadata), &**s))
        .collect()
}

/// One object's part of a pass: its status before and after, and what writing it takes.
struct Pending {
    owner: ObjectRef,
    uid: Option<String>,
    generation: Option<i64>,
    /// The desired status, without conditions (they are merged once the model is resolved).
    desired: Value,
    /// The status as read.
    current: Value,
    old_conditions: Vec<Condition>,
    before: Vec<Write>,
    after: Vec<Write>,
    events: Vec<EventNote>,
    extra: Vec<Problem>,
    /// It has a deletionTimestamp: nothing is repaired or generated for it any more (its
    /// generated Secret going is the garbage collector at work, not damage).
    deleting: bool,
}

impl Pending {
    /// What this object's verifiers are bound to.
    fn binding(&self) -> String {
        tessera_crds::secret::verifier_binding(
            self.uid.as_deref(),
            self.owner.kind.as_str(),
            &self.owner.namespace,
            &self.owner.name,
        )
    }

    fn new<S: serde::Serialize>(
        kind: Kind,
        meta: &ObjectMeta,
        current: Option<&S>,
        old_conditions: &[Condition],
    ) -> Self {
        let (ns, name) = ns_name(meta);
        Pending {
            owner: ObjectRef::new(kind, ns, name),
            uid: meta.uid.clone(),
            generation: meta.generation,
            desired: Value::Null,
            current: current
                .map(to_json)
                .unwrap_or_else(|| Value::Object(Default::default())),
            old_conditions: old_conditions.to_vec(),
            before: Vec::new(),
            after: Vec::new(),
            events: Vec::new(),
            extra: Vec::new(),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

/// What every object's secret decisions share within a pass.
struct Pass<'a> {
    key: &'a VerifierKey,
    settings: &'a Settings,
    now: Timestamp,
    index: HashMap<(&'a str, &'a str), &'a Secret>,
    secrets: &'a mut dyn SecretSource,
    plan: Plan,
    /// Foreign Secrets squatting a generated name: kept out of the model.
    conflicted: HashSet<(String, String)>,
}

impl Pass<'_> {
    /// Verifiers of a user's Secret (`secretRef`): its current value only, no grace period.
    fn referenced(&mut self, p: &Pending, r: &SecretKeyRef) -> Vec<PublishedVerifier> {
        let ns = &*p.owner.namespace;
        let v = self
            .index
            .get(&(ns, r.name.as_str()))
            .and_then(|s| secret_value(s, r.key_or_default()))
            .filter(|v| !v.is_empty());
        verifiers(
            self.key,
            &p.binding(),
            v.as_deref(),
            &[],
            None,
            self.now,
            &mut self.plan,
        )
    }

    /// Plans a generated Secret into `p` and returns the verifiers to publish.
    fn generated(
        &mut self,
        shape: &SecretShape<'_>,
        published: &[PublishedVerifier],
        ref_field: &str,
        p: &mut Pending,
    ) -> Vec<PublishedVerifier> {
        let ns = p.owner.namespace.clone();
        let existing = self.index.get(&(&*ns, shape.name.as_str())).copied();
        let out = plan_secret(
            shape,
            existing,
            !published.is_empty(),
            self.settings,
            self.now,
            self.secrets,
            &mut self.plan,
        );
        if out.conflict {
            self.conflicted.insert((ns.to_string(), shape.name.clone()));
            p.extra.push(Problem {
                reason: Reason::SecretConflict,
                field: "metadata.name".into(),
                message: format!("Secret {} exists and was not generated by Tessera; it is left alone. Delete or rename it, or reference it with {ref_field}", shape.name),
            });
        }
        p.before = out.writes_before_status;
        p.after = out.writes_after_status;
        p.events = out.events;
        verifiers(
            self.key,
            &p.binding(),
            out.value.as_deref().map(str::as_bytes),
            published,
            out.retired,
            self.now,
            &mut self.plan,
        )
    }
}

fn rotation_interval(r: Option<&tessera_crds::credential::SecretRotation>) -> Option<Duration> {
    r.and_then(|r| r.interval.as_deref())
        .and_then(|i| parse_duration(i).ok())
        .filter(|d| !d.is_zero())
}

fn grace_period(r: Option<&tessera_crds::credential::SecretRotation>) -> Duration {
    r.and_then(|r| r.grace_period.as_deref())
        .and_then(|g| parse_duration(g).ok())
        .unwrap_or(DEFAULT_GRACE_PERIOD)
}

/// Decides a pass. See the module documentation.
pub fn plan(
    world: &World,
    key: &VerifierKey,
    settings: &Settings,
    now: Timestamp,
    secrets: &mut dyn SecretSource,
) -> Plan {
    let now = whole_seconds(now);
    let set = &world.set;
    let mut pass = Pass {
        key,
        settings,
        now,
        index: secret_index(set),
        secrets,
        plan: Plan::default(),
        conflicted: HashSet::new(),
    };
    let mut pending: Vec<Pending> = Vec::new();

    // Credentials: client_id, generated secret, verifiers → the status the model reads.
    let mut credentials = Vec::with_capacity(set.credentials.len());
    for c in &set.credentials {
        let (_, name) = ns_name(&c.metadata);
        let old = c.status.clone().unwrap_or_default();
        let mut p = Pending::new(
            Kind::Credential,
            &c.metadata,
            c.status.as_ref(),
            &old.conditions,
        );
        let client_id = c
            .spec
            .client_id
            .clone()
            .or_else(|| old.client_id.clone())
            .or_else(|| generated_client_id(&c.metadata));
        let mut status = CredentialStatus {
            observed_generation: c.metadata.generation,
            client_id: client_id.clone(),
            not_before: old.not_before.clone(),
            ..Default::default()
        };
        if let Some(t) = c
            .spec
            .expires_at
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .filter(|t| *t > now)
        {
            pass.plan.wake_at(t);
        }
        match (&c.spec.secret_ref, client_id) {
            (Some(r), _) => {
                status.secret_name = Some(r.name.clone());
                status.secret_verifiers = pass.referenced(&p, r);
            }
            // No uid yet (never from the API server): nothing to generate for.
            (None, None) => {}
            (None, Some(client_id)) => {
                let sname = tessera_crds::model::credential_secret_name(name);
                status.secret_name = Some(sname.clone());
                let rotation = c.spec.rotation.as_ref();
                let template = c.spec.secret_template.as_ref();
                let shape = SecretShape {
                    owner: Owner {
                        kind: Kind::Credential,
                        meta: &c.metadata,
                        label: CREDENTIAL_LABEL,
                    },
                    name: sname,
                    client_id,
                    orphan: c.spec.deletion_policy == DeletionPolicy::Orphan,
                    labels: template.map(|t| t.labels.clone()).unwrap_or_default(),
                    annotations: template.map(|t| t.annotations.clone()).unwrap_or_default(),
                    rotation_interval: rotation_interval(rotation),
                    grace: grace_period(rotation),
                };
                status.secret_verifiers =
                    pass.generated(&shape, &old.secret_verifiers, "spec.secretRef", &mut p);
            }
        }
        p.desired = to_json(&status);
        let mut desired = (**c).clone();
        desired.status = Some(status);
        credentials.push(Arc::new(desired));
        pending.push(p);
    }

    // ApiProxies: the proxy key of a policy-managed proxy, like a Credential's secret.
    let policy_managed: HashSet<(&str, &str)> = set
        .auth_policies
        .iter()
        .filter(|p| p.spec.management == Management::Policy)
        .map(|p| ns_name(&p.metadata))
        .collect();
    let mut proxies = Vec::with_capacity(set.api_proxies.len());
    for a in &set.api_proxies {
        let (ns, name) = ns_name(&a.metadata);
        let old = a.status.clone().unwrap_or_default();
        let mut p = Pending::new(
            Kind::ApiProxy,
            &a.metadata,
            a.status.as_ref(),
            &old.conditions,
        );
        let mut status = ApiProxyStatus {
            observed_generation: a.metadata.generation,
            audience: Some(a.audience().to_owned()),
            ..Default::default()
        };
        let managed = a
            .spec
            .auth_policy_ref
            .as_ref()
            .is_some_and(|r| policy_managed.contains(&(ns, r.name.as_str())));
        if managed {
            let pk = a.spec.proxy_key.as_ref();
            let client_id = pk
                .and_then(|k| k.client_id.clone())
                .or_else(|| old.client_id.clone())
                .or_else(|| generated_client_id(&a.metadata));
            status.client_id = client_id.clone();
            match (pk.and_then(|k| k.secret_ref.as_ref()), client_id) {
                (Some(r), _) => {
                    status.secret_name = Some(r.name.clone());
                    status.secret_verifiers = pass.referenced(&p, r);
                }
                (None, None) => {}
                (None, Some(client_id)) => {
                    let sname = tessera_crds::model::proxy_key_secret_name(name);
                    status.secret_name = Some(sname.clone());
                    let shape = SecretShape {
                        owner: Owner {
                            kind: Kind::ApiProxy,
                            meta: &a.metadata,
                            label: API_PROXY_LABEL,
                        },
                        name: sname,
                        client_id,
                        orphan: false,
                        labels: BTreeMap::new(),
                        annotations: BTreeMap::new(),
                        rotation_interval: None,
                        grace: DEFAULT_GRACE_PERIOD,
                    };
                    status.secret_verifiers = pass.generated(
                        &shape,
                        &old.secret_verifiers,
                        "spec.proxyKey.secretRef",
                        &mut p,
                    );
                }
            }
        }
        p.desired = to_json(&status);
        let mut desired = (**a).clone();
        desired.status = Some(status);
        proxies.push(Arc::new(desired));
        pending.push(p);
    }

    for o in &set.auth_policies {
        let old = o.status.clone().unwrap_or_default();
        let mut p = Pending::new(
            Kind::AuthPolicy,
            &o.metadata,
            o.status.as_ref(),
            &old.conditions,
        );
        p.desired = to_json(&AuthPolicyStatus {
            observed_generation: o.metadata.generation,
            ..Default::default()
        });
        pending.push(p);
    }
    for o in &set.roles {
        let old = o.status.clone().unwrap_or_default();
        let mut p = Pending::new(Kind::Role, &o.metadata, o.status.as_ref(), &old.conditions);
        p.desired = to_json(&RoleStatus {
            observed_generation: o.metadata.generation,
            scope: Some(o.scope().to_owned()),
            ..Default::default()
        });
        pending.push(p);
    }

    // The model, as the token servers will see it once these statuses are written. A foreign
    // Secret squatting a generated name is withheld, so it can never authenticate anyone.
    let model_set = ResourceSet {
        api_proxies: proxies,
        auth_policies: set.auth_policies.clone(),
        credentials,
        roles: set.roles.clone(),
        secrets: set
            .secrets
            .iter()
            .filter(|s| {
                let (ns, name) = ns_name(&s.metadata);
                !pass.conflicted.contains(&(ns.to_owned(), name.to_owned()))
            })
            .cloned()
            .collect(),
        config_maps: set.config_maps.clone(),
    };
    let snapshot = resolve(&model_set, key, now);
    let mut plan = pass.plan;
    for p in pending {
        finish(p, snapshot.report(), now, &mut plan);
    }
    plan
}

/// Merges an object's `Ready` condition into its desired status and records the writes and
/// Events it needs, if any.
fn finish(p: Pending, report: &Report, now: Timestamp, plan: &mut Plan) {
    let mut problems = p.extra;
    problems.extend_from_slice(report.problems(&p.owner));
    let ready = conditions::ready(&problems, p.generation, Time(now));
    let before = p
        .old_conditions
        .iter()
        .find(|c| c.type_ == ready.type_)
        .map(|c| (c.status.clone(), c.reason.clone()));
    let mut events = p.events;
    if before != Some((ready.status.clone(), ready.reason.clone())) {
        let ok = ready.status == "True";
        events.push(EventNote {
            warning: !ok,
            reason: if ok {
                "Ready".into()
            } else {
                ready.reason.clone()
            },
            note: ready.message.clone(),
        });
    }
    let mut conds = p.old_conditions;
    conditions::merge(&mut conds, ready);
    let mut desired = p.desired;
    desired["conditions"] = to_json(&conds);
    let desired = strip_empty(desired);
    let mut writes = p.before;
    if desired != strip_empty(p.current) {
        let mut status = desired;
        // `notBefore` belongs to whoever revokes (token servers, admins): applying our possibly
        // stale copy could undo a revocation written a moment ago, so it is never in our apply.
        if let Some(o) = status.as_object_mut() {
            o.remove("notBefore");
        }
        writes.push(Write::Status {
            object: p.owner.clone(),
            status,
        });
    }
    writes.extend(p.after);
    *plan.seen.entry(p.owner.kind.as_str()).or_default() += 1;
    if !writes.is_empty() && !p.deleting {
        plan.objects.push(ObjectPlan {
            object: p.owner,
            uid: p.uid,
            writes,
            events,
        });
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// Removes null and empty-list fields, so a status read back (where the API server dropped
/// them) compares equal to the one written.
fn strip_empty(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null() && !matches!(v, Value::Array(a) if a.is_empty()))
                .map(|(k, v)| (k, strip_empty(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_empty).collect()),
        v => v,
    }
}

/// Reads a Secret's value (data or stringData) for tests and the key-set reader.
pub fn read_secret_value(s: &Secret, key: &str) -> Option<Vec<u8>> {
    secret_value(s, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_crds::manifest::parse;

    struct Scripted(u8);
    impl SecretSource for Scripted {
        fn new_secret(&mut self) -> String {
            self.0 += 1;
            char::from(b'a' + self.0)
                .to_string()
                .repeat(GENERATED_SECRET_LEN)
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("ts")
    }

    fn world(extra: &str) -> World {
        let yaml = format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: p}}\nspec: {{management: ACL, grantTypes: [client_credentials]}}\n---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: c, uid: u-1, generation: 1}}\nspec: {{policyRef: {{name: p}}, rotation: {{interval: 24h, gracePeriod: 1h}}}}\n{extra}"
        );
        World {
            set: parse(&yaml, "t")
                .expect("parse")
                .resources
                .into_iter()
                .collect(),
        }
    }

    /// Applies a plan's writes to the world, as the API server would.
    fn apply(w: &mut World, p: &Plan) {
        for o in &p.objects {
            for write in &o.writes {
                match write {
                    Write::CreateSecret(s) | Write::ApplySecret(s) => {
                        let mut s = (**s).clone();
                        s.metadata.creation_timestamp = None;
                        w.set.secrets.retain(|x| x.metadata.name != s.metadata.name);
                        w.set.secrets.push(Arc::new(s));
                    }
                    Write::Status { object, status } if object.kind == Kind::AuthPolicy => {
                        for c in w.set.auth_policies.iter_mut() {
                            let mut n = (**c).clone();
                            n.status =
                                Some(serde_json::from_value(status.clone()).expect("status"));
                            *c = Arc::new(n);
                        }
                    }
                    Write::Status { object, status } => {
                        for c in w
                            .set
                            .credentials
                            .iter_mut()
                            .filter(|c| c.metadata.name.as_deref() == Some(&*object.name))
                        {
                            let mut n = (**c).clone();
                            n.status =
                                Some(serde_json::from_value(status.clone()).expect("status"));
                            *c = Arc::new(n);
                        }
                    }
                }
            }
        }
    }

    fn key() -> VerifierKey {
        VerifierKey::new(vec![7u8; 32])
    }

    fn settings() -> Settings {
        Settings {
            token_endpoint: "http://t/oauth2/token".into(),
        }
    }

    fn cred_status(w: &World) -> CredentialStatus {
        w.set.credentials[0].status.clone().unwrap_or_default()
    }

    #[test]
    fn interval_rotation_and_grace_follow_the_clock() {
        let mut w = world("");
        let mut rng = Scripted(0);
        let p = plan(&w, &key(), &settings(), t(0), &mut rng);
        assert!(matches!(
            p.objects
                .iter()
                .find(|o| o.object.kind == Kind::Credential)
                .map(|o| &o.writes[0]),
            Some(Write::CreateSecret(_))
        ));
        apply(&mut w, &p);
        let first = cred_status(&w).secret_verifiers;
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].verifier,
            key()
                .verifier(
                    &tessera_crds::secret::verifier_binding(
                        w.set.credentials[0].metadata.uid.as_deref(),
                        "Credential",
                        "default",
                        &w.set.credentials[0]
                            .metadata
                            .name
                            .clone()
                            .unwrap_or_default(),
                    ),
                    "b".repeat(43).as_bytes()
                )
                .to_published()
        );
        // The secret was stamped at t(0): rotation is due at t(24h) and the plan says so.
        let p = plan(&w, &key(), &settings(), t(60), &mut rng);
        assert!(p.objects.is_empty(), "{:?}", p.objects);
        assert_eq!(p.next_wake, Some(t(24 * 3600)));
        // Due: the new secret, and the old verifier with a one-hour grace period.
        let p = plan(&w, &key(), &settings(), t(24 * 3600), &mut rng);
        let writes: Vec<&str> = p
            .objects
            .iter()
            .flat_map(|o| o.writes.iter().map(Write::verb))
            .collect();
        assert_eq!(
            writes,
            ["status", "apply_secret"],
            "status (new + old verifier) before the Secret"
        );
        apply(&mut w, &p);
        let vs = cred_status(&w).secret_verifiers;
        assert_eq!(vs.len(), 2);
        assert_eq!(vs[1].verifier, first[0].verifier);
        // The grace period never ends early: 2 s of margin for the truncated clock and for the
        // Secret write that follows the status.
        let end = 25 * 3600 + 2;
        assert_eq!(vs[1].not_after, Some(ts(t(end))));
        assert_eq!(p.next_wake, Some(t(end)));
        // During grace: stable. After grace: the old verifier goes.
        assert!(
            plan(&w, &key(), &settings(), t(24 * 3600 + 10), &mut rng)
                .objects
                .is_empty()
        );
        let p = plan(&w, &key(), &settings(), t(end - 1), &mut rng);
        assert!(
            p.objects.is_empty(),
            "still in its grace period a second before the end"
        );
        let p = plan(&w, &key(), &settings(), t(end), &mut rng);
        apply(&mut w, &p);
        assert_eq!(cred_status(&w).secret_verifiers.len(), 1);
    }

    fn secret_named<'a>(w: &'a World, name: &str) -> Option<&'a Secret> {
        w.set
            .secrets
            .iter()
            .map(|s| &**s)
            .find(|s| s.metadata.name.as_deref() == Some(name))
    }

    fn writes_of(p: &Plan) -> Vec<&'static str> {
        p.objects
            .iter()
            .flat_map(|o| o.writes.iter().map(Write::verb))
            .collect()
    }

    #[test]
    fn a_deleted_generated_secret_is_recreated_and_the_old_verifier_kept_for_its_grace() {
        let mut w = world("");
        let mut rng = Scripted(0);
        let p = plan(&w, &key(), &settings(), t(0), &mut rng);
        apply(&mut w, &p);
        let first = cred_status(&w).secret_verifiers;
        assert!(secret_named(&w, "c-client").is_some());
        // Someone deletes the generated Secret.
        w.set.secrets.clear();
        let p = plan(&w, &key(), &settings(), t(60), &mut rng);
        assert!(
            writes_of(&p).contains(&"create_secret"),
            "recreated: {:?}",
            writes_of(&p)
        );
        apply(&mut w, &p);
        assert!(secret_named(&w, "c-client").is_some());
        let vs = cred_status(&w).secret_verifiers;
        assert_eq!(
            vs.len(),
            2,
            "the new verifier and the previous one in grace: {vs:?}"
        );
        assert_ne!(vs[0].verifier, first[0].verifier, "a new secret");
        assert_eq!(vs[1].verifier, first[0].verifier);
        assert!(vs[1].not_after.is_some());
        // Then steady: nothing more to write until the grace period ends.
        let p = plan(&w, &key(), &settings(), t(120), &mut rng);
        assert!(p.objects.is_empty(), "{:?}", writes_of(&p));
    }

    #[test]
    fn a_foreign_secret_with_the_generated_name_is_left_alone_and_reported() {
        let mut w = world(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {name: c-client}\nstringData: {client_secret: not-ours}\n",
        );
        let p = plan(&w, &key(), &settings(), t(0), &mut Scripted(0));
        let writes = writes_of(&p);
        assert!(
            !writes.contains(&"create_secret") && !writes.contains(&"apply_secret"),
            "the foreign Secret is never written: {writes:?}"
        );
        apply(&mut w, &p);
        assert!(
            cred_status(&w).secret_verifiers.is_empty(),
            "its value must not authenticate"
        );
        let status = serde_json::to_value(cred_status(&w)).expect("json");
        assert!(
            status.to_string().contains("SecretConflict"),
            "the condition says why: {status}"
        );
    }

    #[test]
    fn orphan_leaves_the_generated_secret_without_an_owner_and_delete_sets_one() {
        let owners = |policy: DeletionPolicy| {
            let mut w = world("");
            let mut c = (*w.set.credentials[0]).clone();
            c.spec.deletion_policy = policy;
            w.set.credentials[0] = Arc::new(c);
            let p = plan(&w, &key(), &settings(), t(0), &mut Scripted(0));
            apply(&mut w, &p);
            secret_named(&w, "c-client")
                .expect("generated")
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default()
        };
        let delete = owners(DeletionPolicy::Delete);
        assert_eq!(
            delete.len(),
            1,
            "Delete: garbage-collected with its Credential"
        );
        assert_eq!(delete[0].uid, "u-1");
        assert!(
            owners(DeletionPolicy::Orphan).is_empty(),
            "Orphan: kept when the Credential goes"
        );
    }

    #[test]
    fn a_credential_being_deleted_is_not_repaired() {
        // Its generated Secret is gone (the garbage collector or a namespace deletion took it):
        // re-creating it would fight the deletion (issue 20).
        let mut w = world("");
        let mut c = (*w.set.credentials[0]).clone();
        c.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(0)));
        w.set.credentials[0] = Arc::new(c);
        let credential_writes = |p: &Plan| {
            p.objects
                .iter()
                .filter(|o| o.object.kind == Kind::Credential)
                .count()
        };
        let p = plan(&w, &key(), &settings(), t(10), &mut Scripted(0));
        assert_eq!(credential_writes(&p), 0, "{:?}", p.objects);
        // The same Credential not being deleted gets its Secret and status.
        let w = world("");
        let p = plan(&w, &key(), &settings(), t(10), &mut Scripted(0));
        assert_eq!(credential_writes(&p), 1, "{:?}", p.objects);
    }

    #[test]
    fn an_expiring_credential_wakes_the_operator_and_is_reported_when_due() {
        let w = world(
            "---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: e, uid: u-2}\nspec: {policyRef: {name: p}, clientId: e, expiresAt: '2027-01-15T08:00:00Z'}\n",
        );
        let exp: Timestamp = "2027-01-15T08:00:00Z".parse().expect("ts");
        let before = plan(
            &w,
            &key(),
            &settings(),
            exp - SignedDuration::from_secs(60),
            &mut Scripted(0),
        );
        assert!(before.next_wake.is_some_and(|n| n <= exp));
        let after = plan(&w, &key(), &settings(), exp, &mut Scripted(0));
        let st = after
            .objects
            .iter()
            .find(|o| &*o.object.name == "e")
            .expect("e");
        let Write::Status { status, .. } = st
            .writes
            .iter()
            .find(|w| matches!(w, Write::Status { .. }))
            .expect("status")
        else {
            unreachable!()
        };
        assert_eq!(status["conditions"][0]["reason"], "Expired");
    }

    #[test]
    fn generated_client_ids_are_stable_per_uid_and_differ_across_uids() {
        let m = |uid: &str| ObjectMeta {
            name: Some("app".into()),
            uid: Some(uid.into()),
            ..Default::default()
        };
        assert_eq!(generated_client_id(&m("a")), generated_client_id(&m("a")));
        assert_ne!(generated_client_id(&m("a")), generated_client_id(&m("b")));
        assert_eq!(generated_client_id(&ObjectMeta::default()), None);
    }

    #[test]
    fn only_our_generated_form_counts_as_a_valid_secret() {
        assert!(is_generated_form("A".repeat(43).as_bytes()));
        assert!(!is_generated_form(b"short"));
        assert!(!is_generated_form("+".repeat(43).as_bytes()));
    }
}
