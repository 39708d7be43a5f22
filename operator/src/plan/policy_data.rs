//! The policy data: what AuthPolicies reference (user pools, CA bundles) copied into one Secret
//! of the operator's own, so token servers need no read access to users' Secrets and
//! ConfigMaps. Written only when the copy differs from what is stored.

use super::{Write, own_secret};
use crate::error::Error;
use k8s_openapi::api::core::v1::Secret;
use tessera_crds::model::ResourceSet;
use tessera_crds::policy_data::{DATA_KEY, MAX_BYTES, collect, secret_name};

/// The write that brings the policy-data Secret (named after the keys Secret `keys_secret`) to
/// what `set` references, `None` when `stored` already holds it.
pub fn plan(
    set: &ResourceSet,
    namespace: &str,
    keys_secret: &str,
    stored: Option<&Secret>,
) -> Result<Option<Write>, Error> {
    let doc = collect(set);
    let current = stored
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(DATA_KEY));
    if current.is_some_and(|c| c.0 == doc) {
        return Ok(None);
    }
    if doc.len() > MAX_BYTES {
        return Err(Error::PolicyDataTooLarge {
            bytes: doc.len(),
            max: MAX_BYTES,
        });
    }
    Ok(Some(own_secret(
        namespace,
        &secret_name(keys_secret),
        DATA_KEY,
        doc,
        stored,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(users: usize) -> ResourceSet {
        let mut yaml = String::from(
            "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {name: p, namespace: team-a}\nspec: {grantTypes: [password], userPool: {name: users}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: users, namespace: team-a}\nstringData:\n",
        );
        for i in 0..users {
            yaml.push_str(&format!(
                "  user{i}: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"\n"
            ));
        }
        tessera_crds::manifest::parse(&yaml, "t")
            .expect("parse")
            .resources
            .into_iter()
            .collect()
    }

    fn written(w: Option<Write>) -> Secret {
        match w {
            Some(Write::CreateSecret(s) | Write::ReplaceSecret(s)) => *s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn written_when_absent_or_different_and_not_when_equal() {
        let s = set(2);
        let first = plan(&s, "ops", "tessera-keys", None).expect("plan");
        assert!(matches!(first, Some(Write::CreateSecret(_))));
        let mut stored = written(first);
        assert_eq!(stored.metadata.namespace.as_deref(), Some("ops"));
        assert_eq!(
            stored.metadata.name.as_deref(),
            Some(&*secret_name("tessera-keys"))
        );
        assert!(
            stored.data.as_ref().expect("data")[DATA_KEY]
                .0
                .windows(5)
                .any(|w| w == b"user1"),
            "the users are in it"
        );
        stored.metadata.resource_version = Some("7".into());
        assert_eq!(
            plan(&s, "ops", "tessera-keys", Some(&stored)).expect("plan"),
            None,
            "a steady cluster writes nothing"
        );
        let changed = plan(&set(3), "ops", "tessera-keys", Some(&stored)).expect("plan");
        let Some(Write::ReplaceSecret(r)) = changed else {
            panic!("{changed:?}")
        };
        assert_eq!(
            r.metadata.resource_version.as_deref(),
            Some("7"),
            "guarded by what it was planned from"
        );
    }

    #[test]
    fn too_much_for_a_secret_is_an_error_naming_the_sizes_and_the_fix() {
        let big = set(MAX_BYTES / 50);
        let Err(err) = plan(&big, "ops", "tessera-keys", None) else {
            panic!("a document over {MAX_BYTES} bytes was planned as a write")
        };
        assert!(matches!(err, Error::PolicyDataTooLarge { bytes, max } if bytes > max));
        let msg = err.to_string();
        assert!(msg.contains("split large user pools"), "{msg}");
        assert!(!msg.contains("argon2id"), "never the content: {msg}");
    }
}
