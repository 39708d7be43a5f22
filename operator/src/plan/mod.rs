//! What the operator should write, decided from what it sees: the pure core of the reconciler.
//!
//! [`plan`] takes every watched object (the four kinds, Secrets and ConfigMaps), the verifier key
//! and the clock, and returns the writes that bring the cluster to the desired state: generated
//! Secrets (create, repair, rotate, re-own) and status on every resource, each with the Events
//! to publish once it succeeded. It returns nothing for an object already in its desired state,
//! which is what keeps a steady cluster at zero writes. [`key_set`] and [`policy_data`] plan the
//! two Secrets of the operator's own the same way: as [`Write`]s, which one `apply` carries out.
//!
//! Status depends on the whole world (a client_id is contested, a Role vanished), so a pass
//! resolves the model once for all objects ([`tessera_crds::model::resolve`], O(n)) instead of
//! once per object.

mod credentials;
pub mod key_set;
pub mod policy_data;
mod proxy_keys;
mod secrets;
mod status;
mod verifiers;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tessera_crds::model::{ObjectRef, ResourceSet, resolve};
use tessera_crds::secret::VerifierKey;

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
    /// Replace a Secret of the operator's own (the key set, the policy data), guarded by the
    /// resourceVersion it was planned from: of two writers, the second gets a conflict.
    ReplaceSecret(Box<Secret>),
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
            Write::ReplaceSecret(_) => "replace_secret",
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
    pub(super) fn wake_at(&mut self, t: Timestamp) {
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

pub(super) fn ts(t: Timestamp) -> String {
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
pub(super) fn grace_end(now: Timestamp, grace: Duration) -> Timestamp {
    let margin = SignedDuration::from_secs(2);
    let grace = SignedDuration::try_from(grace).unwrap_or_default();
    now.checked_add(grace.saturating_add(margin)).unwrap_or(now)
}

pub(super) fn ceil_seconds(t: Timestamp) -> Timestamp {
    let up = i64::from(t.subsec_nanosecond() > 0);
    Timestamp::from_second(t.as_second() + up).unwrap_or(t)
}

pub(super) fn ns_name(meta: &ObjectMeta) -> (&str, &str) {
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

pub(super) fn secret_index(set: &ResourceSet) -> HashMap<(&str, &str), &Secret> {
    set.secrets
        .iter()
        .map(|s| (ns_name(&s.metadata), &**s))
        .collect()
}

/// What every object's secret decisions share within a pass.
pub(super) struct Pass<'a> {
    pub(super) key: &'a VerifierKey,
    pub(super) settings: &'a Settings,
    pub(super) now: Timestamp,
    pub(super) index: HashMap<(&'a str, &'a str), &'a Secret>,
    pub(super) secrets: &'a mut dyn SecretSource,
    pub(super) plan: Plan,
    /// Foreign Secrets squatting a generated name: kept out of the model.
    pub(super) conflicted: HashSet<(String, String)>,
}

/// Reads a Secret's value (data or stringData) for tests and the key-set reader.
pub fn read_secret_value(s: &Secret, key: &str) -> Option<Vec<u8>> {
    secrets::secret_value(s, key)
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
    let mut pending: Vec<status::Pending> = Vec::new();
    let credentials = credentials::plan(&mut pass, &set.credentials, &mut pending);
    let proxies = proxy_keys::plan(
        &mut pass,
        &set.api_proxies,
        &set.auth_policies,
        &mut pending,
    );
    status::plan_policies_and_roles(&set.auth_policies, &set.roles, &mut pending);

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
        service_accounts: set.service_accounts.clone(),
    };
    let snapshot = resolve(&model_set, key, now);
    let mut plan = pass.plan;
    for p in pending {
        status::finish(p, snapshot.report(), now, &mut plan);
    }
    plan
}

/// The write that makes a Secret of the operator's own (in its namespace, labelled managed-by)
/// hold `value` under `key`: a create when none is stored, else a replace guarded by the stored
/// resourceVersion.
pub fn own_secret(
    namespace: &str,
    name: &str,
    key: &str,
    value: Vec<u8>,
    stored: Option<&Secret>,
) -> Write {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into())])),
            resource_version: stored.and_then(|s| s.metadata.resource_version.clone()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(key.to_owned(), ByteString(value))])),
        ..Default::default()
    };
    match stored {
        None => Write::CreateSecret(Box::new(secret)),
        Some(_) => Write::ReplaceSecret(Box::new(secret)),
    }
}

#[cfg(test)]
mod tests;
