//! The immutable, indexed result of resolving a set of resources: what the token server serves.

use super::problem::{ObjectRef, Report};
use crate::auth_policy::{
    ClientAuthMethod, GrantType, Management, SigningAlgorithm, TokenManagement, TokenType,
};
use crate::credential::MtlsBinding;
use crate::secret::{Verifier, VerifierKey};
use foldhash::HashMap;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Everything the token server needs, indexed for the hot path.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub(crate) clients: HashMap<String, Arc<Client>>,
    pub(crate) audiences: HashMap<Arc<str>, ObjectRef>,
    pub(crate) report: Report,
    pub(crate) counts: Counts,
}

/// How many objects of each kind went into a snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// ApiProxies.
    pub api_proxies: usize,
    /// AuthPolicies.
    pub auth_policies: usize,
    /// Credentials.
    pub credentials: usize,
    /// Roles.
    pub roles: usize,
    /// Secrets.
    pub secrets: usize,
    /// Clients served (Credentials and proxy keys).
    pub clients: usize,
}

impl Snapshot {
    /// The client with this client_id. O(1).
    pub fn client(&self, client_id: &str) -> Option<&Arc<Client>> {
        self.clients.get(client_id)
    }

    /// Every client, in no particular order.
    pub fn clients(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.clients.values()
    }

    /// The ApiProxy that owns an audience, if any is served.
    pub fn audience_owner(&self, audience: &str) -> Option<&ObjectRef> {
        self.audiences.get(audience)
    }

    /// Problems per object.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Object counts.
    pub fn counts(&self) -> Counts {
        self.counts
    }
}

/// Whether a client is a Credential or a policy-managed ApiProxy's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// A Credential, served on `/credential/*` and `/oauth2/token`.
    Credential,
    /// A proxy key, served on `/auth/*` and `/oauth2/token`.
    ProxyKey,
}

/// One verifier and until when it authenticates.
#[derive(Clone, Debug)]
pub struct SecretVerifier {
    /// The keyed hash.
    pub verifier: Verifier,
    /// End of the grace period after a rotation; `None` for the current secret.
    pub not_after: Option<Timestamp>,
}

/// A client, resolved.
#[derive(Debug)]
pub struct Client {
    /// Its client_id.
    pub client_id: String,
    /// The object it comes from.
    pub owner: ObjectRef,
    /// Credential or proxy key.
    pub kind: ClientKind,
    /// Verifiers of the secrets that authenticate it (several during a rotation's grace period;
    /// none for a certificate-only client).
    pub verifiers: Vec<SecretVerifier>,
    /// What its verifiers are bound to (`crate::secret::verifier_binding`).
    pub binding: Box<str>,
    /// The policy its tokens are issued under.
    pub policy: Arc<Policy>,
    /// Audiences it may obtain tokens for, sorted.
    pub audiences: Vec<Arc<str>>,
    /// Audiences whose tokens it may introspect whoever holds them (a resource server), sorted:
    /// a Credential's `introspects`, a proxy key's own API.
    pub introspects: Vec<Arc<str>>,
    /// Scopes it holds (its Roles' scope names), sorted.
    pub scopes: Vec<Arc<str>>,
    /// Custom claims from Credential metadata.
    pub claims: BTreeMap<String, String>,
    /// Certificate binding, if any (boxed: most clients have none, and it is large).
    pub mtls: Option<Box<MtlsBinding>>,
    /// After this time it authenticates nothing.
    pub expires_at: Option<Timestamp>,
    /// Tokens issued at or before this time (whole seconds) are no longer accepted.
    pub not_before: Option<Timestamp>,
    /// Token-request limits: its Credential's, else its policy's.
    pub limits: Limits,
    /// Public keys its `private_key_jwt` assertions are signed with.
    pub assertion_keys: Vec<AssertionKey>,
    /// The ServiceAccount (namespace, name) whose tokens authenticate it.
    pub service_account: Option<(String, String)>,
    /// Where it publishes its assertion keys (`spec.jwksUri`), fetched by the token server.
    pub jwks_uri: Option<Arc<str>>,
}

/// A public key a client signs its assertions with, and the one algorithm it signs with.
#[derive(Debug, Clone)]
pub struct AssertionKey {
    /// Key id, which an assertion's header names.
    pub kid: Option<String>,
    /// `RS256`, `PS256`, `ES256` or `EdDSA`.
    pub alg: &'static str,
    /// The public JWK.
    pub jwk: crate::credential::Jwk,
}

impl Client {
    /// Checks a presented secret in constant time against every verifier valid at `now`.
    /// Every verifier is compared, so the time taken does not tell which one matched.
    pub fn check_secret(&self, key: &VerifierKey, presented: &[u8], now: Timestamp) -> bool {
        let candidate = key.verifier(&self.binding, presented);
        let mut ok = false;
        for v in &self.verifiers {
            let valid_now = v.not_after.is_none_or(|t| now < t);
            ok |= candidate.ct_eq(&v.verifier) & valid_now;
        }
        ok
    }

    /// True if the client may authenticate at `now` (not expired).
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }

    /// True if the client may obtain tokens for `audience`.
    pub fn may_call(&self, audience: &str) -> bool {
        self.audiences
            .binary_search_by(|a| (**a).cmp(audience))
            .is_ok()
    }

    /// True if the client is a resource server of `audience`: it may introspect any token for it.
    pub fn serves(&self, audience: &str) -> bool {
        self.introspects
            .binary_search_by(|a| (**a).cmp(audience))
            .is_ok()
    }

    /// True if the client holds `scope`.
    pub fn holds_scope(&self, scope: &str) -> bool {
        self.scopes.binary_search_by(|s| (**s).cmp(scope)).is_ok()
    }
}

/// An AuthPolicy with its defaults applied and its user pool loaded.
#[derive(Debug)]
pub struct Policy {
    /// The AuthPolicy.
    pub owner: ObjectRef,
    /// JWT or opaque.
    pub token_type: TokenType,
    /// ACL or Policy.
    pub management: Management,
    /// Grants allowed.
    pub grant_types: Vec<GrantType>,
    /// Access-token lifetime; `None` for immortal tokens.
    pub access_ttl: Option<Duration>,
    /// Refresh tokens, when enabled.
    pub refresh: Option<RefreshPolicy>,
    /// GET with query parameters allowed.
    pub allow_url_parameters: bool,
    /// Signing algorithm for JWTs.
    pub algorithm: SigningAlgorithm,
    /// Client authentication methods allowed.
    pub auth_methods: Vec<ClientAuthMethod>,
    /// Users for the password grant.
    pub users: Option<Arc<UserPool>>,
    /// Response format and scope handling.
    pub token_management: TokenManagement,
    /// Which CA client certificates must chain to for `tls_client_auth`.
    pub client_ca: ClientCa,
    /// Token-request limits of its clients (a Credential may override them).
    pub limits: Limits,
    /// ServiceAccount tokens of its clients also go through a TokenReview.
    pub token_review: bool,
    /// Its clients' `jwksUri` may reach internal addresses.
    pub allow_internal_jwks_uri: bool,
}

/// How many tokens a client may request: per second (a bucket) and per UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Sustained requests per second and the burst on top, if limited.
    pub rate: Option<(u32, u32)>,
    /// Requests per UTC day, if limited.
    pub per_day: Option<u64>,
}

impl Limits {
    /// From a resource's `rateLimit` and `quota`.
    pub fn from_spec(
        rate: Option<&crate::common::RateLimit>,
        quota: Option<&crate::common::Quota>,
    ) -> Self {
        Self {
            rate: rate.map(|r| {
                (
                    r.requests_per_second,
                    r.burst.unwrap_or(r.requests_per_second),
                )
            }),
            per_day: quota.map(|q| q.tokens_per_day.max(1) as u64),
        }
    }

    /// `self`, with each limit `over` sets replacing this one.
    pub fn overridden_by(self, over: Limits) -> Self {
        Self {
            rate: over.rate.or(self.rate),
            per_day: over.per_day.or(self.per_day),
        }
    }

    /// No limit at all.
    pub fn is_unlimited(&self) -> bool {
        self.rate.is_none() && self.per_day.is_none()
    }
}

/// The CA for `tls_client_auth` under a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCa {
    /// The token server's global bundle.
    Global,
    /// The policy's own PEM bundle.
    Pem(Arc<str>),
    /// The policy names a bundle that could not be read: nobody is admitted (fail closed).
    Unavailable,
}

impl Policy {
    /// True if the grant is allowed.
    pub fn allows_grant(&self, g: GrantType) -> bool {
        self.grant_types.contains(&g)
    }

    /// True if the client authentication method is allowed.
    pub fn allows_auth(&self, m: ClientAuthMethod) -> bool {
        self.auth_methods.contains(&m)
    }

    /// True if clients of this policy can authenticate with a secret at all.
    pub fn uses_secrets(&self) -> bool {
        self.allows_auth(ClientAuthMethod::ClientSecretBasic)
            || self.allows_auth(ClientAuthMethod::ClientSecretPost)
    }
}

/// Refresh-token settings, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Lifetime of a refresh token.
    pub ttl: Duration,
    /// A refresh returns a new refresh token.
    pub rotate: bool,
    /// Most refreshes in one chain.
    pub max_refreshes: Option<u32>,
}

/// Users of the password grant: username to argon2id PHC string.
#[derive(Debug, Default)]
pub struct UserPool {
    pub(crate) users: HashMap<String, String>,
}

impl FromIterator<(String, String)> for UserPool {
    /// A pool from (username, argon2id PHC hash) pairs; used by tests and tools.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        UserPool {
            users: iter.into_iter().collect(),
        }
    }
}

impl UserPool {
    /// The argon2id PHC hash of a user.
    pub fn hash_of(&self, username: &str) -> Option<&str> {
        self.users.get(username).map(String::as_str)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True if the pool has no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}
