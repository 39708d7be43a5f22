//! Credentials: the client_id, the generated client secret (create, repair, rotate, re-own)
//! and the verifiers published in status.

use super::secrets::{Owner, SecretShape, grace_period, rotation_interval};
use super::status::{Pending, to_json};
use super::{CREDENTIAL_LABEL, Pass, generated_client_id, ns_name};
use jiff::Timestamp;
use std::sync::Arc;
use tessera_crds::Credential;
use tessera_crds::credential::{CredentialStatus, DeletionPolicy};
use tessera_crds::model::Kind;

/// Plans every Credential into `pending`; returns them with the status they will have, for the
/// model the Ready conditions are resolved from.
pub(super) fn plan(
    pass: &mut Pass<'_>,
    all: &[Arc<Credential>],
    pending: &mut Vec<Pending>,
) -> Vec<Arc<Credential>> {
    let now = pass.now;
    let mut credentials = Vec::with_capacity(all.len());
    for c in all {
        let (ns, name) = ns_name(&c.metadata);
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
        status.service_account = c
            .spec
            .service_account
            .as_ref()
            .map(|sa| format!("{ns}/{}", sa.name));
        // A client that proves itself with keys or its ServiceAccount gets no generated secret.
        let secretless = c.spec.service_account.is_some()
            || c.spec.jwks.is_some()
            || c.spec.jwks_ref.is_some()
            || c.spec.jwks_uri.is_some();
        match (&c.spec.secret_ref, client_id) {
            (None, _) if secretless => {}
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

    credentials
}
