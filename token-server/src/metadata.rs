//! The authorization-server metadata document (RFC 8414, and OpenID discovery's subset): pure,
//! built once per served view (`crate::state::Served`) and sent by `crate::http::discovery`.
//!
//! It tells only what is configured: the grants, client authentication methods and signing
//! algorithms of the policies that serve clients now, and nothing about ID tokens or
//! authorization-endpoint flows, which Tessera never offers.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use tessera_crds::auth_policy::{ClientAuthMethod, SigningAlgorithm, TokenType};
use tessera_crds::model::Snapshot;

/// What the served policies offer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Offered {
    /// Grant types.
    pub grants: BTreeSet<&'static str>,
    /// Client authentication methods.
    pub auth_methods: BTreeSet<&'static str>,
    /// Algorithms JWT access tokens are signed with.
    pub token_algorithms: BTreeSet<&'static str>,
    /// Some policy issues opaque tokens (introspection is their only check).
    pub opaque: bool,
}

impl Offered {
    /// What the policies of `snapshot`'s clients offer, signed with keys of `algorithms`.
    pub fn of(snapshot: &Snapshot, algorithms: &[SigningAlgorithm]) -> Self {
        let mut o = Offered::default();
        let mut seen = std::collections::HashSet::new();
        for c in snapshot.clients() {
            let p = &c.policy;
            // Many clients share a policy: look at each once.
            if !seen.insert(std::sync::Arc::as_ptr(p)) {
                continue;
            }
            o.grants.extend(p.grant_types.iter().map(|g| g.as_str()));
            o.auth_methods
                .extend(p.auth_methods.iter().map(|m| m.as_str()));
            match p.token_type {
                TokenType::Jwt if algorithms.contains(&p.algorithm) => {
                    o.token_algorithms.insert(p.algorithm.as_str());
                }
                TokenType::Jwt => {}
                TokenType::OAuth2 => o.opaque = true,
            }
        }
        o
    }
}

/// The metadata document.
pub fn document(issuer: &str, offered: &Offered) -> Value {
    let base = issuer.trim_end_matches('/');
    let auth: Vec<&str> = offered.auth_methods.iter().copied().collect();
    let mut d = json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/oauth2/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "grant_types_supported": offered.grants.iter().collect::<Vec<_>>(),
        "token_endpoint_auth_methods_supported": auth,
        "introspection_endpoint_auth_methods_supported": auth,
        "revocation_endpoint_auth_methods_supported": auth,
        // RFC 8414 requires the member; there is no authorization endpoint, so no response type.
        "response_types_supported": [],
        "access_token_signing_alg_values_supported":
            offered.token_algorithms.iter().collect::<Vec<_>>(),
    });
    let m = d.as_object_mut().expect("an object");
    if offered
        .auth_methods
        .contains(ClientAuthMethod::PrivateKeyJwt.as_str())
    {
        for k in [
            "token_endpoint_auth_signing_alg_values_supported",
            "introspection_endpoint_auth_signing_alg_values_supported",
            "revocation_endpoint_auth_signing_alg_values_supported",
        ] {
            m.insert(k.into(), json!(crate::assertion::ALGORITHMS));
        }
    }
    if offered
        .auth_methods
        .iter()
        .any(|a| a.ends_with("tls_client_auth"))
    {
        m.insert(
            "tls_client_certificate_bound_access_tokens".into(),
            json!(true),
        );
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_offered_and_nothing_about_id_tokens() {
        let mut o = Offered::default();
        o.grants.insert("client_credentials");
        o.auth_methods.insert("client_secret_basic");
        o.token_algorithms.insert("ES256");
        let d = document("https://t.example/", &o);
        assert_eq!(d["token_endpoint"], "https://t.example/oauth2/token");
        assert_eq!(d["grant_types_supported"], json!(["client_credentials"]));
        assert_eq!(
            d["access_token_signing_alg_values_supported"],
            json!(["ES256"])
        );
        for absent in [
            "id_token_signing_alg_values_supported",
            "subject_types_supported",
            "code_challenge_methods_supported",
            "token_endpoint_auth_signing_alg_values_supported",
            "tls_client_certificate_bound_access_tokens",
        ] {
            assert!(d.get(absent).is_none(), "{absent}: {d}");
        }
        o.auth_methods.insert("private_key_jwt");
        o.auth_methods.insert("tls_client_auth");
        let d = document("https://t.example", &o);
        assert_eq!(
            d["token_endpoint_auth_signing_alg_values_supported"],
            json!(["RS256", "PS256", "ES256", "EdDSA"])
        );
        assert_eq!(d["tls_client_certificate_bound_access_tokens"], true);
    }
}
