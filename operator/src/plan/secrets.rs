//! Generated Secrets (a Credential's client secret, a proxy key): created, repaired when
//! deleted or edited, rotated on an interval or on request, re-owned, and left alone when a
//! Secret Tessera did not generate holds the name.

use super::{
    API_VERSION, CLIENT_ID_KEY, EventNote, GENERATED_SECRET_LEN, MANAGED_BY, Plan, ROTATE_SECRET,
    ROTATED_AT, ROTATION_REQUEST, SecretSource, Settings, TOKEN_ENDPOINT_KEY, Write, grace_end,
    ns_name, ts,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_crds::duration::parse_duration;
use tessera_crds::model::Kind;
use tessera_crds::secret::CLIENT_SECRET_KEY;
use tessera_crds::validate::DEFAULT_GRACE_PERIOD;

/// Who a generated Secret belongs to.
#[derive(Clone, Copy)]
pub(super) struct Owner<'a> {
    pub(super) kind: Kind,
    pub(super) meta: &'a ObjectMeta,
    pub(super) label: &'static str,
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
pub(super) struct SecretShape<'a> {
    pub(super) owner: Owner<'a>,
    pub(super) name: String,
    pub(super) client_id: String,
    pub(super) orphan: bool,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) rotation_interval: Option<Duration>,
    pub(super) grace: Duration,
}

pub(super) fn secret_value(s: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.as_bytes().to_vec());
    }
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
}

pub(super) fn is_generated_form(v: &[u8]) -> bool {
    v.len() == GENERATED_SECRET_LEN
        && v.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// The outcome for one generated secret: the value in effect, verifiers and writes.
pub(super) struct SecretOutcome {
    pub(super) value: Option<String>,
    pub(super) writes_before_status: Vec<Write>,
    pub(super) writes_after_status: Vec<Write>,
    pub(super) events: Vec<EventNote>,
    /// Verifier of the secret that stopped being current, with the end of its grace period.
    pub(super) retired: Option<Timestamp>,
    pub(super) conflict: bool,
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

pub(super) fn plan_secret(
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

pub(super) fn rotation_interval(
    r: Option<&tessera_crds::credential::SecretRotation>,
) -> Option<Duration> {
    r.and_then(|r| r.interval.as_deref())
        .and_then(|i| parse_duration(i).ok())
        .filter(|d| !d.is_zero())
}

pub(super) fn grace_period(r: Option<&tessera_crds::credential::SecretRotation>) -> Duration {
    r.and_then(|r| r.grace_period.as_deref())
        .and_then(|g| parse_duration(g).ok())
        .unwrap_or(DEFAULT_GRACE_PERIOD)
}
