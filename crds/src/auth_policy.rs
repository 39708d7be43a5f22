//! AuthPolicy: how tokens are issued (token type, management mode, grants, lifetimes, algorithm,
//! client authentication, the password-grant user pool and the response format).

use crate::common::LocalRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How tokens are issued for the ApiProxies and Credentials that reference this policy.
///
/// Defaults give strict RFC 6749 behaviour: RS256-signed JWT access tokens valid for 1h, the
/// client_credentials grant, client_secret_basic or client_secret_post, no refresh tokens.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "AuthPolicy",
    plural = "authpolicies",
    namespaced,
    status = "AuthPolicyStatus",
    shortname = "ap",
    category = "tessera",
    printcolumn = r#"{"name":"Token","type":"string","jsonPath":".spec.tokenType"}"#,
    printcolumn = r#"{"name":"Management","type":"string","jsonPath":".spec.management"}"#,
    printcolumn = r#"{"name":"Algorithm","type":"string","jsonPath":".spec.signingAlgorithm"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.accessToken) || !self.accessToken.immortal || !has(self.accessToken.ttl)").message("accessToken.ttl: an immortal token has no ttl; remove accessToken.ttl or set accessToken.immortal to false"))]
#[x_kube(validation = Rule::new("!has(self.accessToken) || !self.accessToken.immortal || !has(self.refresh) || !self.refresh.enabled").message("refresh.enabled: immortal access tokens are never refreshed; set refresh.enabled to false or accessToken.immortal to false"))]
#[x_kube(validation = Rule::new("!has(self.refresh) || !self.refresh.enabled || (has(self.accessToken) && self.accessToken.immortal) || duration(has(self.refresh.ttl) ? self.refresh.ttl : '24h') > duration(has(self.accessToken) && has(self.accessToken.ttl) ? self.accessToken.ttl : '1h')").message("refresh.ttl: a refresh token must outlive the access token; make refresh.ttl longer than accessToken.ttl"))]
#[x_kube(validation = Rule::new("!has(self.grantTypes) || ('refresh_token' in self.grantTypes) == (has(self.refresh) && self.refresh.enabled)").message("grantTypes: refresh_token in grantTypes and refresh.enabled go together; add both or neither"))]
#[x_kube(validation = Rule::new("!has(self.refresh) || !has(self.refresh.maxRefreshes) || !has(self.refresh.rotate) || self.refresh.rotate").message("refresh.maxRefreshes: the limit counts rotations; set refresh.rotate to true or remove maxRefreshes"))]
#[x_kube(validation = Rule::new("!has(self.grantTypes) || !('password' in self.grantTypes) || has(self.userPool)").message("userPool: the password grant checks users against a pool; set userPool to a Secret of argon2id hashes or remove password from grantTypes"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthPolicySpec {
    /// `JWT`: signed JWT access tokens (RFC 9068) that gateways validate offline against the
    /// JWKS. `OAuth2`: opaque access tokens checked through introspection. Default: `JWT`.
    #[serde(default)]
    pub token_type: TokenType,
    /// `ACL`: each Credential is a client, using `/credential/jwt` and `/credential/token`.
    /// `Policy`: each ApiProxy referencing this policy has one proxy key, using `/auth/jwt` and
    /// `/auth/token`. Default: `ACL`.
    #[serde(default)]
    pub management: Management,
    /// Grants clients may use: `client_credentials`, `password`, `refresh_token`. `password`
    /// requires `userPool`; `refresh_token` requires `refresh.enabled`.
    /// Default: `[client_credentials]`.
    #[serde(default = "default_grant_types")]
    #[schemars(length(min = 1, max = 3), extend("x-kubernetes-list-type" = "set"))]
    pub grant_types: Vec<GrantType>,
    /// Access-token lifetime. Default: `ttl: 1h`.
    #[serde(default)]
    pub access_token: AccessTokenSettings,
    /// Refresh tokens. Default: disabled.
    #[serde(default)]
    pub refresh: RefreshSettings,
    /// Accept requests as GET with query parameters (the gateway product's "Allow URL
    /// Parameters"). Credentials in URLs end up in access logs: leave off unless a legacy client
    /// needs it. Default: false.
    #[serde(default)]
    pub allow_url_parameters: bool,
    /// JWS algorithm for JWT access tokens: `RS256`, `ES256` or `EdDSA`. Default: `RS256`.
    #[serde(default)]
    pub signing_algorithm: SigningAlgorithm,
    /// Client authentication methods accepted (RFC 8414 names): `client_secret_basic`,
    /// `client_secret_post`, `tls_client_auth`, `self_signed_tls_client_auth`, `private_key_jwt`.
    /// Default: `[client_secret_basic, client_secret_post]`.
    #[serde(default = "default_auth_methods")]
    #[schemars(length(min = 1, max = 5), extend("x-kubernetes-list-type" = "set"))]
    pub client_auth_methods: Vec<ClientAuthMethod>,
    /// Secret whose keys are usernames and values argon2id hashes (PHC strings, as written by
    /// `argon2` or `tessera hash-password`), checked by the password grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_pool: Option<LocalRef>,
    /// Response format and scope handling (the gateway product's Token Management Settings).
    #[serde(default)]
    pub token_management: TokenManagement,
    /// CA bundle (PEM) that client certificates of this policy's clients must chain to for
    /// `tls_client_auth`, instead of the token server's global `--tls-client-ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<ClientCaRef>,
    /// How ServiceAccount tokens of this policy's clients (Credential `serviceAccount`) are
    /// verified: `JWKS` (default: the cluster issuer's keys, no API request per token) or
    /// `TokenReview` (also asks the API server, which refuses tokens of deleted pods and
    /// ServiceAccounts; one API request per token).
    #[serde(default)]
    pub service_account_verification: ServiceAccountVerification,
    /// A Credential's `jwksUri` may name a loopback, private (RFC 1918, ULA), link-local,
    /// shared (100.64/10) or cluster-internal (`*.svc`, `*.cluster.local`, single-label) host.
    /// Off by default: the token server would otherwise fetch whatever a Credential's author
    /// points it at inside the cluster (server-side request forgery). Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_internal_jwks_uri: bool,
    /// Token requests per second each client of this policy may make (a Credential's own
    /// `rateLimit` overrides it). Past it: 429 with `Retry-After`. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::common::RateLimit>,
    /// Token requests per UTC day each client of this policy may make (a Credential's own
    /// `quota` overrides it). Past it: 429 until midnight UTC. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<crate::common::Quota>,
}

/// Where a CA bundle is: a key of a Secret or of a ConfigMap in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.configMapRef)").message("clientCa: set exactly one of secretRef, configMapRef"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientCaRef {
    /// A Secret holding the bundle (e.g. one cert-manager writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<CaKeyRef>,
    /// A ConfigMap holding the bundle (e.g. one trust-manager writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<CaKeyRef>,
}

/// A key of a Secret or ConfigMap holding a CA bundle (default key `ca.crt`).
pub type CaKeyRef = crate::common::DataKeyRef;

/// The key a CA bundle is read from when `key` is not given.
pub const DEFAULT_CA_KEY: &str = "ca.crt";

fn default_grant_types() -> Vec<GrantType> {
    vec![GrantType::ClientCredentials]
}

fn default_auth_methods() -> Vec<ClientAuthMethod> {
    vec![
        ClientAuthMethod::ClientSecretBasic,
        ClientAuthMethod::ClientSecretPost,
    ]
}

/// Access token format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum TokenType {
    /// Signed JWT access token (RFC 9068).
    #[default]
    #[serde(rename = "JWT")]
    Jwt,
    /// Opaque token, checked through introspection (RFC 7662).
    #[serde(rename = "OAuth2")]
    OAuth2,
}

/// How ServiceAccount tokens are verified.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ServiceAccountVerification {
    /// Against the cluster issuer's published keys.
    #[default]
    #[serde(rename = "JWKS")]
    Jwks,
    /// The keys, then a TokenReview by the API server.
    TokenReview,
}

/// Who the clients of a policy are.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Management {
    /// One client per Credential (`/credential/*`).
    #[default]
    #[serde(rename = "ACL")]
    Acl,
    /// One proxy key per ApiProxy (`/auth/*`).
    Policy,
}

/// An OAuth2 grant type.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// RFC 6749 §4.4.
    ClientCredentials,
    /// RFC 6749 §4.3, users from the policy's user pool.
    Password,
    /// RFC 6749 §6.
    RefreshToken,
}

impl GrantType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
            GrantType::RefreshToken => "refresh_token",
        }
    }
}

/// JWS signing algorithm.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    #[default]
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl SigningAlgorithm {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::RS256 => "RS256",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::EdDSA => "EdDSA",
        }
    }
}

/// Client authentication method (RFC 8414 / RFC 8705 registry names).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with form-encoded id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A CA-issued client certificate bound to the Credential (RFC 8705 §2.1).
    TlsClientAuth,
    /// A self-signed client certificate bound by thumbprint (RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
    /// A JWT the client signs with a private key whose public half is in the Credential's
    /// `jwks` (RFC 7523 §2.2, OpenID Connect Core §9).
    PrivateKeyJwt,
}

impl ClientAuthMethod {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::TlsClientAuth => "tls_client_auth",
            ClientAuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
            ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// Access-token lifetime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenSettings {
    /// Lifetime, e.g. `15m`, `1h`, `1h30m` (hours, minutes, seconds). Default: `1h`.
    /// Not allowed with `immortal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 2, max = 32),
        regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$")
    )]
    pub ttl: Option<String>,
    /// Tokens never expire (no `exp` claim; the gateway product's "Token Should Be Immortal").
    /// Such tokens outlive key rotation only while their key stays published. Default: false.
    #[serde(default)]
    pub immortal: bool,
}

/// Refresh-token settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshSettings {
    /// Issue refresh tokens with access tokens (not with immortal ones). Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// How long a refresh token can be used, longer than the access token's ttl. Default: `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 2, max = 32),
        regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$")
    )]
    pub ttl: Option<String>,
    /// Each refresh returns a new refresh token; the presented one is then spent. Default: true.
    #[serde(default = "default_true")]
    pub rotate: bool,
    /// How many times a token chain may be refreshed; unlimited when absent. Needs `rotate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Declared as int32 in the schema: schemars would say `format: uint32`, which the API server
    // does not know and warns about on every apply (issue 20).
    #[schemars(with = "Option<i32>", range(min = 1, max = 100000))]
    pub max_refreshes: Option<u32>,
}

fn default_true() -> bool {
    true
}

// Hand-written so that an absent `refresh` means the same as `refresh: {}` (serde's field
// defaults), which is also what the schema's `default` tells the API server.
impl Default for RefreshSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl: None,
            rotate: true,
            max_refreshes: None,
        }
    }
}

impl Default for TokenManagement {
    fn default() -> Self {
        Self {
            scope_mismatch: ScopeMismatch::Reject,
            return_scope: true,
            access_token_only: false,
            expires_in_unit: ExpiresInUnit::Seconds,
            response_fields: ResponseFieldNames::default(),
        }
    }
}

/// What to do when a client asks for scopes it does not hold.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ScopeMismatch {
    /// Refuse the request with `invalid_scope` (RFC 6749 §5.2).
    #[default]
    Reject,
    /// Grant the scopes the client holds among those asked for; `invalid_scope` only if none.
    Intersect,
}

/// Unit of `expires_in` in responses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ExpiresInUnit {
    /// Seconds, as RFC 6749 §5.1 says.
    #[default]
    Seconds,
    /// Milliseconds: the gateway product's legacy default, for clients written against it.
    Milliseconds,
}

/// Response format and scope handling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenManagement {
    /// Requested scopes the client does not hold: `Reject` (default) or `Intersect`.
    #[serde(default)]
    pub scope_mismatch: ScopeMismatch,
    /// Return `scope` in the token response. Default: true.
    #[serde(default = "default_true")]
    pub return_scope: bool,
    /// Return only the access token field (drop token_type, expires_in, scope, refresh_token).
    /// Default: false.
    #[serde(default)]
    pub access_token_only: bool,
    /// Unit of `expires_in`. Default: `Seconds`.
    #[serde(default)]
    pub expires_in_unit: ExpiresInUnit,
    /// Renamed response fields, for clients written against another gateway.
    #[serde(default)]
    pub response_fields: ResponseFieldNames,
}

/// Names of the token response fields; each defaults to the RFC 6749 name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseFieldNames {
    /// Name of the `access_token` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    )]
    pub access_token: Option<String>,
    /// Name of the `token_type` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    )]
    pub token_type: Option<String>,
    /// Name of the `expires_in` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    )]
    pub expires_in: Option<String>,
    /// Name of the `refresh_token` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    )]
    pub refresh_token: Option<String>,
    /// Name of the `scope` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    )]
    pub scope: Option<String>,
}

/// Observed state of an AuthPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions; `Ready` says whether the policy is valid and served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
