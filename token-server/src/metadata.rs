//! The authorization-server metadata document (RFC 8414, and OpenID discovery's subset): pure,
//! built once per served view (`crate::state::Served`) and sent by `crate::http::discovery`.

use serde_json::{Value, json};
use tessera_crds::auth_policy::SigningAlgorithm;

/// The metadata document.
pub fn document(issuer: &str, algorithms: &[SigningAlgorithm]) -> Value {
    let base = issuer.trim_end_matches('/');
    let algs: Vec<&str> = algorithms.iter().map(|a| a.as_str()).collect();
    let auth = [
        "client_secret_basic",
        "client_secret_post",
        "tls_client_auth",
        "self_signed_tls_client_auth",
        "private_key_jwt",
    ];
    json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/oauth2/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "grant_types_supported": ["client_credentials", "password", "refresh_token"],
        "token_endpoint_auth_methods_supported": auth,
        "token_endpoint_auth_signing_alg_values_supported": crate::assertion::ALGORITHMS,
        "introspection_endpoint_auth_signing_alg_values_supported": crate::assertion::ALGORITHMS,
        "revocation_endpoint_auth_signing_alg_values_supported": crate::assertion::ALGORITHMS,
        "introspection_endpoint_auth_methods_supported": auth,
        "revocation_endpoint_auth_methods_supported": auth,
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "access_token_signing_alg_values_supported": algs,
        "code_challenge_methods_supported": [],
        "tls_client_certificate_bound_access_tokens": true,
    })
}
