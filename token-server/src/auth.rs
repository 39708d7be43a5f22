//! Client authentication against the snapshot: constant-time secret checks, the policy's allowed
//! methods and the gateway product's `-` secret for proxy keys. Pure: it says how the attempt
//! ended ([`Outcome`]) and the caller records that against the guessing budgets
//! (`crate::store`) in the same step that checks them.

use crate::error::OAuthError;
use crate::store::Outcome;
use crate::token::keys::KeySet;
use jiff::Timestamp;
use std::sync::Arc;
use tessera_crds::auth_policy::ClientAuthMethod;
use tessera_crds::model::{Client, ClientCa, ClientKind, Snapshot};

/// The secret a proxy key sends for the password and refresh_token grants (the gateway product's
/// convention: the users authenticate, the proxy key only names the API).
pub const DASH: &str = "-";

/// How the client presented its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// HTTP Basic.
    Basic,
    /// `client_id` and `client_secret` in the form.
    Post,
    /// Only `client_id` (a public request, e.g. the password grant of a proxy key with `-`).
    IdOnly,
    /// Only `client_id`, over a TLS connection with a client certificate (RFC 8705).
    Certificate,
    /// A `private_key_jwt` assertion (RFC 7523), held in `secret`.
    Assertion,
    /// A Kubernetes ServiceAccount token as a jwt-bearer assertion, held in `secret`; the
    /// client_id is the one sent, or empty (the token names the ServiceAccount).
    ServiceAccount,
}

/// Client credentials as presented. Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The client_id.
    pub client_id: String,
    /// The secret, if any.
    pub secret: Option<String>,
    /// How it was presented.
    pub presented: Presented,
}

impl ClientCredentials {
    /// Metric label of the method: the RFC 8414 name, or `proxy_key_dash` for the `-` secret.
    pub fn method_label(&self) -> &'static str {
        match (self.presented, self.secret.as_deref()) {
            (Presented::Certificate, _) => "tls_client_auth",
            (Presented::Assertion, _) => "private_key_jwt",
            (Presented::ServiceAccount, _) => "service_account_token",
            (_, Some(DASH)) | (Presented::IdOnly, _) => "proxy_key_dash",
            (Presented::Basic, _) => "client_secret_basic",
            (Presented::Post, _) => "client_secret_post",
        }
    }
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("presented", &self.presented)
            .finish_non_exhaustive()
    }
}

/// Everything authentication needs.
pub struct AuthInput<'a> {
    /// The snapshot.
    pub snapshot: &'a Snapshot,
    /// The keys (for the verifier key).
    pub keys: &'a KeySet,
    /// Presented credentials.
    pub creds: &'a ClientCredentials,
    /// Time.
    pub now: Timestamp,
    /// The grant accepts `-` from a proxy key.
    pub dash_allowed: bool,
    /// The TLS client certificate, if any.
    pub peer: Option<&'a crate::mtls::PeerCert>,
    /// The names an assertion's `aud` may use for this server: its issuer and endpoint URLs.
    pub audiences: &'a [String],
    /// The keys a client publishes at its `jwksUri`, fetched for this request.
    pub remote_keys: Option<&'a [tessera_crds::model::AssertionKey]>,
    /// CA verifiers of policies with their own bundle.
    pub client_cas: &'a std::collections::HashMap<
        tessera_crds::model::ObjectRef,
        Arc<dyn rustls::server::danger::ClientCertVerifier>,
    >,
}

/// An authenticated client.
#[derive(Debug)]
pub struct Authenticated {
    /// The client.
    pub client: Arc<Client>,
    /// The method that succeeded (metric label).
    pub method: &'static str,
    /// `x5t#S256` of the certificate the client authenticated with, for certificate-bound tokens.
    pub cnf: Option<String>,
    /// What is left of the client's token-request limits, when this was a token request of a
    /// limited client (for the `RateLimit` header).
    pub remaining: Option<crate::store::Remaining>,
    /// A verified `private_key_jwt` assertion, which the caller makes single-use.
    pub assertion: Option<crate::assertion::Verified>,
}

fn method_of(p: Presented) -> Option<ClientAuthMethod> {
    match p {
        Presented::Basic => Some(ClientAuthMethod::ClientSecretBasic),
        Presented::Post => Some(ClientAuthMethod::ClientSecretPost),
        Presented::Assertion | Presented::ServiceAccount => Some(ClientAuthMethod::PrivateKeyJwt),
        Presented::IdOnly | Presented::Certificate => None,
    }
}

/// Authenticates the client. Every failure is the same `invalid_client`, whether the client_id is
/// unknown, disabled or the secret is wrong, and takes the same work (one keyed hash). The
/// outcome is what the guessing budgets count: a checked secret is a success even if the method
/// is then refused.
pub fn authenticate(i: AuthInput<'_>) -> (Result<Authenticated, OAuthError>, Outcome) {
    let mut outcome = Outcome::Failed;
    let r = check(&i, &mut outcome);
    (r, outcome)
}

/// A client proven by a verified ServiceAccount token: the Credential bound to that
/// ServiceAccount, which must be the `client_id` sent (if one was) and allow jwt-bearer
/// assertions (`private_key_jwt`).
pub fn service_account_client(
    bound: Option<&Arc<Client>>,
    client_id: &str,
    now: Timestamp,
) -> Result<Authenticated, OAuthError> {
    let invalid = |d: &str| OAuthError::InvalidClient {
        description: d.to_owned(),
        basic: false,
    };
    let Some(client) = bound.filter(|c| c.is_active(now)) else {
        return Err(invalid(
            "no Credential in this namespace binds this ServiceAccount (spec.serviceAccount)",
        ));
    };
    if !client_id.is_empty() && client_id != client.client_id {
        return Err(invalid(
            "the ServiceAccount token belongs to another client than the client_id sent",
        ));
    }
    if !client.policy.allows_auth(ClientAuthMethod::PrivateKeyJwt) {
        return Err(invalid(
            "this client's policy does not allow jwt-bearer assertions; add private_key_jwt to the AuthPolicy's clientAuthMethods",
        ));
    }
    Ok(Authenticated {
        client: client.clone(),
        method: "service_account_token",
        cnf: None,
        remaining: None,
        assertion: None,
    })
}

fn check(i: &AuthInput<'_>, outcome: &mut Outcome) -> Result<Authenticated, OAuthError> {
    let basic = i.creds.presented == Presented::Basic;
    let fail = || OAuthError::InvalidClient {
        description: "client authentication failed".into(),
        basic,
    };
    let secret = i.creds.secret.as_deref();
    let client = i
        .snapshot
        .client(&i.creds.client_id)
        .filter(|c| c.is_active(i.now));
    if let (Presented::Certificate, Some(peer)) = (i.creds.presented, i.peer) {
        // RFC 8705: tls_client_auth needs a chain to the client CA and a matching binding;
        // self_signed_tls_client_auth needs the bound thumbprint. Both need a valid certificate.
        let Some(client) = client else {
            return Err(fail());
        };
        let binding = client.mtls.as_deref();
        let valid = peer.valid_at(i.now.as_second());
        let chained = match &client.policy.client_ca {
            ClientCa::Global => peer.ca_verified,
            ClientCa::Pem(_) => i
                .client_cas
                .get(&client.policy.owner)
                .is_some_and(|v| peer.chains_to(v.as_ref())),
            ClientCa::Unavailable => false,
        };
        let tls = client.policy.allows_auth(ClientAuthMethod::TlsClientAuth)
            && chained
            && binding.is_some_and(|b| peer.matches(b));
        let self_signed = client
            .policy
            .allows_auth(ClientAuthMethod::SelfSignedTlsClientAuth)
            && binding
                .and_then(|b| b.thumbprint_sha256.as_deref())
                .is_some_and(|t| t == peer.thumbprint);
        if !valid || !(tls || self_signed) {
            return Err(fail());
        }
        *outcome = Outcome::Succeeded;
        let method = if tls {
            "tls_client_auth"
        } else {
            "self_signed_tls_client_auth"
        };
        return Ok(Authenticated {
            client: client.clone(),
            method,
            cnf: Some(peer.thumbprint.clone()),
            remaining: None,
            assertion: None,
        });
    }
    if i.creds.presented == Presented::Assertion {
        // Unknown clients read like a bad signature: nothing tells them apart.
        let signature = || OAuthError::InvalidClient {
            description: crate::assertion::Refused::Signature.to_string(),
            basic: false,
        };
        let Some(client) = client else {
            return Err(signature());
        };
        let verified = crate::assertion::verify(
            client,
            i.remote_keys.unwrap_or(&client.assertion_keys),
            secret.unwrap_or_default(),
            i.audiences,
            i.now.as_second(),
        )
        .map_err(|e| match e {
            crate::assertion::Refused::Signature => signature(),
            crate::assertion::Refused::Claims(d) => OAuthError::InvalidClient {
                description: d,
                basic: false,
            },
        })?;
        // Signed with the client's key: a success for the budgets, whatever is wrong below.
        *outcome = Outcome::Succeeded;
        if !client.policy.allows_auth(ClientAuthMethod::PrivateKeyJwt) {
            return Err(OAuthError::InvalidClient {
                description: "this client's policy does not allow private_key_jwt; add it to the AuthPolicy's clientAuthMethods".into(),
                basic: false,
            });
        }
        return Ok(Authenticated {
            client: client.clone(),
            method: "private_key_jwt",
            cnf: None,
            remaining: None,
            assertion: Some(verified),
        });
    }
    let Some(client) = client else {
        // Same work as a real check, so timing does not tell unknown ids apart.
        let _ = i
            .keys
            .verifier_key()
            .verifier("unknown-client", secret.unwrap_or_default().as_bytes());
        return Err(fail());
    };
    let dash = i.dash_allowed
        && client.kind == ClientKind::ProxyKey
        && matches!(secret, None | Some(DASH));
    if !dash {
        let Some(secret) = secret else {
            return Err(fail());
        };
        if !client.check_secret(i.keys.verifier_key(), secret.as_bytes(), i.now) {
            return Err(fail());
        }
        // A checked secret clears this source's failures, whatever else is wrong below.
        *outcome = Outcome::Succeeded;
        // The method is checked after the secret, so it tells nothing about unknown clients.
        let method = method_of(i.creds.presented);
        if !method.is_some_and(|m| client.policy.allows_auth(m)) {
            let allowed: Vec<&str> = client
                .policy
                .auth_methods
                .iter()
                .map(|m| m.as_str())
                .collect();
            return Err(OAuthError::InvalidClient {
                description: format!(
                    "this client's policy does not allow {}; use one of: {}",
                    method.map_or("a request without a secret", |m| m.as_str()),
                    allowed.join(", ")
                ),
                basic,
            });
        }
    } else {
        // A proxy key's `-` proves nothing: not a failure, and not a known-good source either.
        *outcome = Outcome::Void;
    }
    Ok(Authenticated {
        client: client.clone(),
        method: i.creds.method_label(),
        cnf: None,
        remaining: None,
        assertion: None,
    })
}
