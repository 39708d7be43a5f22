//! ApiProxies: the proxy key of a proxy whose AuthPolicy is policy-managed, generated and
//! rotated like a Credential's secret, and the audience published in status.

use super::secrets::{Owner, SecretShape};
use super::status::{Pending, to_json};
use super::{API_PROXY_LABEL, Pass, generated_client_id, ns_name};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tessera_crds::api_proxy::ApiProxyStatus;
use tessera_crds::auth_policy::Management;
use tessera_crds::model::Kind;
use tessera_crds::validate::DEFAULT_GRACE_PERIOD;
use tessera_crds::{ApiProxy, AuthPolicy};

/// Plans every ApiProxy into `pending`; returns them with the status they will have.
pub(super) fn plan(
    pass: &mut Pass<'_>,
    all: &[Arc<ApiProxy>],
    policies: &[Arc<AuthPolicy>],
    pending: &mut Vec<Pending>,
) -> Vec<Arc<ApiProxy>> {
    let policy_managed: HashSet<(&str, &str)> = policies
        .iter()
        .filter(|p| p.spec.management == Management::Policy)
        .map(|p| ns_name(&p.metadata))
        .collect();
    let mut proxies = Vec::with_capacity(all.len());
    for a in all {
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

    proxies
}
