//! Status: every object's desired status and `Ready` condition, compared with what is stored so
//! a steady object gets no write.

use super::{EventNote, ObjectPlan, Plan, Write, ns_name};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use serde_json::Value;
use std::sync::Arc;
use tessera_crds::auth_policy::AuthPolicyStatus;
use tessera_crds::conditions;
use tessera_crds::model::{Kind, ObjectRef, Problem, Report};
use tessera_crds::role::RoleStatus;
use tessera_crds::{AuthPolicy, Role};

/// One object's part of a pass: its status before and after, and what writing it takes.
pub(super) struct Pending {
    pub(super) owner: ObjectRef,
    pub(super) uid: Option<String>,
    pub(super) generation: Option<i64>,
    /// The desired status, without conditions (they are merged once the model is resolved).
    pub(super) desired: Value,
    /// The status as read.
    pub(super) current: Value,
    pub(super) old_conditions: Vec<Condition>,
    pub(super) before: Vec<Write>,
    pub(super) after: Vec<Write>,
    pub(super) events: Vec<EventNote>,
    pub(super) extra: Vec<Problem>,
    /// It has a deletionTimestamp: nothing is repaired or generated for it any more (its
    /// generated Secret going is the garbage collector at work, not damage).
    pub(super) deleting: bool,
}

impl Pending {
    /// What this object's verifiers are bound to.
    pub(super) fn binding(&self) -> String {
        tessera_crds::secret::verifier_binding(
            self.uid.as_deref(),
            self.owner.kind.as_str(),
            &self.owner.namespace,
            &self.owner.name,
        )
    }

    pub(super) fn new<S: serde::Serialize>(
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

/// Merges an object's `Ready` condition into its desired status and records the writes and
/// Events it needs, if any.
pub(super) fn finish(p: Pending, report: &Report, now: Timestamp, plan: &mut Plan) {
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

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// Removes null and empty-list fields, so a status read back (where the API server dropped
/// them) compares equal to the one written.
pub(super) fn strip_empty(v: Value) -> Value {
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

/// AuthPolicies and Roles: status only (they generate nothing).
pub(super) fn plan_policies_and_roles(
    policies: &[Arc<AuthPolicy>],
    roles: &[Arc<Role>],
    pending: &mut Vec<Pending>,
) {
    for o in policies {
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
    for o in roles {
        let old = o.status.clone().unwrap_or_default();
        let mut p = Pending::new(Kind::Role, &o.metadata, o.status.as_ref(), &old.conditions);
        p.desired = to_json(&RoleStatus {
            observed_generation: o.metadata.generation,
            scope: Some(o.scope().to_owned()),
            ..Default::default()
        });
        pending.push(p);
    }
}
