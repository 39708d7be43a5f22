//! Claims of access and refresh tokens.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `aud`: one string, or an array when the token names several APIs (RFC 7519 §4.1.3).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Default for Audience {
    fn default() -> Self {
        Audience::Many(Vec::new())
    }
}

impl Audience {
    /// No audience at all.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// From a list: a single string when it has one entry.
    pub fn from_vec(mut v: Vec<String>) -> Self {
        if v.len() == 1 {
            Audience::One(v.remove(0))
        } else {
            Audience::Many(v)
        }
    }

    /// The audiences as a slice.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(s) => std::slice::from_ref(s),
            Audience::Many(v) => v,
        }
    }
}

/// RFC 8705 confirmation: the SHA-256 thumbprint of the client certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    /// base64url SHA-256 of the DER certificate.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// Claims of an access token: the JWT payload (RFC 9068), and the sealed content of an opaque one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the client_id, or the user for the password grant.
    pub sub: String,
    /// The APIs the token is for.
    pub aud: Audience,
    /// Expiry (seconds since the epoch); absent for immortal tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Token id.
    pub jti: String,
    /// The client.
    pub client_id: String,
    /// Granted scopes, space-separated; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Certificate binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// Custom claims from Credential metadata (reserved names are refused by validation).
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}

/// Claims sealed in a refresh token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RefreshClaims {
    /// Subject of the access tokens it yields.
    pub sub: String,
    /// The client it was issued to; only that client may use it.
    pub client_id: String,
    /// Audiences granted originally (a refresh can only narrow them).
    pub aud: Vec<String>,
    /// Scopes granted originally.
    pub scope: Vec<String>,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// Token id.
    pub jti: String,
    /// Chain id: the jti of the first refresh token of the chain, for reuse detection.
    pub chain: String,
    /// Refreshes done in this chain so far.
    pub n: u32,
    /// When the chain started (the original authentication).
    pub auth_time: i64,
    /// The user, for a password-grant chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Certificate binding of the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}
