//! Policy data: the Secrets and ConfigMaps that AuthPolicies reference (user pools, client CA
//! bundles), copied by the operator into one Secret beside the key set.
//!
//! Why a copy: token servers must not read Secrets cluster-wide (least privilege), and RBAC
//! cannot grant "the Secrets some AuthPolicy names". With the copy, a token server's Secret
//! access is two fixed names in the operator's namespace, and it resolves the same model as the
//! operator does. Only referenced objects are copied, never client secrets (those reach token
//! servers as verifiers in status).

use crate::model::ResourceSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The data key holding the JSON document.
pub const DATA_KEY: &str = "policy-data.json";

/// Largest document written: a Secret holds at most 1 MiB, and the rest is metadata headroom.
pub const MAX_BYTES: usize = 900 * 1024;

/// The Secret's name, derived from the keys Secret's so that both are configured by one flag.
pub fn secret_name(keys_secret: &str) -> String {
    format!("{keys_secret}-policy-data")
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    secrets: Vec<Secret>,
    config_maps: Vec<ConfigMap>,
}

fn meta(m: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        ..ObjectMeta::default()
    }
}

/// The document for `set`: every existing Secret or ConfigMap an AuthPolicy (user pools, CA
/// bundles) or a Credential (`jwksRef`) references, with
/// only its name, namespace and data, in a stable order (so an unchanged world writes nothing).
pub fn collect(set: &ResourceSet) -> Vec<u8> {
    let mut secrets = BTreeSet::new();
    let mut config_maps = BTreeSet::new();
    for p in &set.auth_policies {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        if let Some(u) = &p.spec.user_pool {
            secrets.insert((ns.clone(), u.name.clone()));
        }
        if let Some(ca) = &p.spec.client_ca {
            if let Some(r) = &ca.secret_ref {
                secrets.insert((ns.clone(), r.name.clone()));
            }
            if let Some(r) = &ca.config_map_ref {
                config_maps.insert((ns, r.name.clone()));
            }
        }
    }
    // A Credential's JWKS by reference (spec.jwksRef) too.
    for c in &set.credentials {
        let ns = c.metadata.namespace.clone().unwrap_or_default();
        if let Some(r) = &c.spec.jwks_ref {
            if let Some(k) = &r.secret_ref {
                secrets.insert((ns.clone(), k.name.clone()));
            }
            if let Some(k) = &r.config_map_ref {
                config_maps.insert((ns, k.name.clone()));
            }
        }
    }
    let key = |m: &ObjectMeta| {
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    let mut doc = Document::default();
    for s in &set.secrets {
        if secrets.remove(&key(&s.metadata)) {
            doc.secrets.push(Secret {
                metadata: meta(&s.metadata),
                data: s.data.clone(),
                string_data: s.string_data.clone(),
                ..Secret::default()
            });
        }
    }
    for c in &set.config_maps {
        if config_maps.remove(&key(&c.metadata)) {
            doc.config_maps.push(ConfigMap {
                metadata: meta(&c.metadata),
                data: c.data.clone(),
                ..ConfigMap::default()
            });
        }
    }
    doc.secrets.sort_by_key(|s| key(&s.metadata));
    doc.config_maps.sort_by_key(|c| key(&c.metadata));
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Adds the copied objects in `bytes` to `set`.
pub fn extend(set: &mut ResourceSet, bytes: &[u8]) -> Result<(), String> {
    let doc: Document = serde_json::from_slice(bytes)
        .map_err(|e| format!("`{DATA_KEY}` is not a policy-data document: {e}"))?;
    set.secrets
        .extend(doc.secrets.into_iter().map(std::sync::Arc::new));
    set.config_maps
        .extend(doc.config_maps.into_iter().map(std::sync::Arc::new));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;

    fn set(yaml: &str) -> ResourceSet {
        let mut s = ResourceSet::default();
        for r in parse(yaml, "t.yaml").expect("parse").resources {
            s.push(r);
        }
        s
    }

    const YAML: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: p, namespace: a}
spec:
  grantTypes: [password]
  userPool: {name: users}
  clientCa: {configMapRef: {name: ca}}
---
apiVersion: v1
kind: Secret
metadata: {name: users, namespace: a, labels: {team: billing}}
stringData: {alice: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}
---
apiVersion: v1
kind: Secret
metadata: {name: users, namespace: b}
stringData: {mallory: "x"}
---
apiVersion: v1
kind: Secret
metadata: {name: client-secret, namespace: a}
stringData: {client_secret: "never copied"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ca, namespace: a}
data: {ca.crt: "-----BEGIN CERTIFICATE-----"}
"#;

    #[test]
    fn copies_only_what_policies_reference_and_round_trips() {
        let bytes = collect(&set(YAML));
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        assert!(text.contains("alice") && text.contains("BEGIN CERTIFICATE"));
        assert!(!text.contains("mallory"), "another namespace's Secret");
        assert!(!text.contains("never copied"), "an unreferenced Secret");
        assert!(!text.contains("labels"), "only name, namespace and data");
        let mut out = ResourceSet::default();
        extend(&mut out, &bytes).expect("decode");
        assert_eq!(out.secrets.len(), 1);
        assert_eq!(out.config_maps.len(), 1);
        assert_eq!(
            collect(&set(YAML)),
            bytes,
            "stable: no write when nothing changed"
        );
    }

    #[test]
    fn a_missing_reference_copies_nothing_and_garbage_is_an_error() {
        let doc = collect(&set(YAML.split("---").next().expect("policy")));
        assert_eq!(doc, br#"{"secrets":[],"configMaps":[]}"#);
        let err =
            extend(&mut ResourceSet::default(), b"{\"secrets\":1}").expect_err("not a document");
        assert!(err.contains(DATA_KEY), "{err}");
    }

    #[test]
    fn a_credentials_jwks_reference_is_copied_too() {
        let yaml = r#"
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: c, namespace: a}
spec: {policyRef: {name: p}, jwksRef: {configMapRef: {name: keys}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: keys, namespace: a}
data: {jwks.json: '{"keys": []}'}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated, namespace: a}
data: {note: other}
"#;
        let text = String::from_utf8(collect(&set(yaml))).expect("utf8");
        assert!(text.contains("jwks.json"), "{text}");
        assert!(!text.contains("unrelated"), "{text}");
    }
}
