//! Field types shared by several resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to another object of a known kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRef {
    /// Name of the object, in this object's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// A key in a Secret in the same namespace holding a client secret (default key
/// `client_secret`).
pub type SecretKeyRef = DataKeyRef;

/// A client-secret verifier the operator publishes in status, so that token servers can check
/// secrets without reading any Secret (least privilege). See [`crate::secret`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedVerifier {
    /// `hmac-sha256:` followed by the unpadded base64url keyed hash of the secret.
    pub verifier: String,
    /// RFC 3339 time after which this verifier no longer authenticates (the end of a rotation's
    /// grace period). Absent for the current secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

/// What every resource's status carries: the generation it describes and standard conditions.
pub trait HasConditions {
    /// The status conditions, if a status is present.
    fn conditions(&self) -> &[Condition];
}

/// The `Ready` condition type used on every resource.
pub const READY: &str = "Ready";

/// How fast a client may request tokens: a token bucket refilled at `requestsPerSecond`, holding
/// up to `burst` requests. Shared by every token-server replica with `--state redis://`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained token requests per second.
    #[schemars(with = "i32", range(min = 1, max = 100000))]
    pub requests_per_second: u32,
    /// Requests allowed at once on top of the sustained rate. Default: `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 1, max = 1000000))]
    pub burst: Option<u32>,
}

/// How many token requests a client may make per UTC day.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quota {
    /// Token requests per UTC day.
    #[schemars(range(min = 1, max = 1000000000))]
    pub tokens_per_day: i64,
}

/// A key of a Secret or ConfigMap in the same namespace (a CA bundle, a JWKS).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataKeyRef {
    /// Name of the object, in this object's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key holding the value. Default: `client_secret` for a client secret, `ca.crt` for a CA
    /// bundle, `jwks.json` for a JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

impl DataKeyRef {
    /// The key to read, or `default`.
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}
