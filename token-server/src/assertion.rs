//! `private_key_jwt` client assertions (RFC 7523 §2.2 and §3, OpenID Connect Core §9): a JWT the
//! client signs with a key whose public half is in its Credential's `spec.jwks`.
//!
//! The key decides the algorithm (the header's `alg` must be the key's: never `none`, never an
//! HMAC keyed with the public key); `iss` and `sub` are the client_id; `aud` names this server
//! (its issuer, or one of its endpoint URLs); `exp` is required and at most
//! [`MAX_LIFETIME`] ahead; `nbf` and `iat` are honoured with [`SKEW`]; `jti` is required, and the
//! caller makes it single-use until `exp` through the security state.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tessera_crds::model::{AssertionKey, Client};

/// The `client_assertion_type` of a JWT assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The longest assertion read.
pub const MAX_LEN: usize = 8 * 1024;
/// How far ahead `exp` may be.
pub const MAX_LIFETIME: i64 = 300;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const SKEW: i64 = 30;
/// The algorithms accepted, for discovery.
pub const ALGORITHMS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];

/// A verified assertion: what makes it single-use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`.
    pub exp: i64,
}

/// Why an assertion is refused. Before the signature is verified every reason reads the same
/// (nothing to learn about keys); after it, the reason is the client's to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a JWT, no key of the client matches, the algorithm is not the key's, or the
    /// signature does not verify.
    #[error("the client assertion is not a JWT signed by one of this client's keys (spec.jwks)")]
    Signature,
    /// Signed by the client, but a claim is wrong.
    #[error("{0}")]
    Claims(String),
}

#[derive(serde::Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    #[serde(default)]
    aud: Audience,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn names_any(&self, ours: &[String]) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => ours.iter().any(|o| o == a),
            Audience::Many(v) => v.iter().any(|a| ours.iter().any(|o| o == a)),
        }
    }
}

/// The `sub` of an assertion, unverified: which client it claims to be, for a request that
/// sends no `client_id` (RFC 7521 §4.2). The signature decides whether it is.
pub fn unverified_subject(assertion: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Sub {
        sub: Option<String>,
    }
    serde_json::from_slice::<Sub>(&bytes).ok()?.sub
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "PS256" => Algorithm::PS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn decoding_key(k: &AssertionKey) -> Option<DecodingKey> {
    let j = &k.jwk;
    match j.kty.as_str() {
        "RSA" => DecodingKey::from_rsa_components(j.n.as_deref()?, j.e.as_deref()?).ok(),
        "EC" => DecodingKey::from_ec_components(j.x.as_deref()?, j.y.as_deref()?).ok(),
        "OKP" => DecodingKey::from_ed_components(j.x.as_deref()?).ok(),
        _ => None,
    }
}

/// Verifies `assertion` for `client` at `now` (seconds). `audiences` are the names this server
/// answers to.
pub fn verify(
    client: &Client,
    keys: &[AssertionKey],
    assertion: &str,
    audiences: &[String],
    now: i64,
) -> Result<Verified, Refused> {
    if assertion.len() > MAX_LEN {
        return Err(Refused::Signature);
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| Refused::Signature)?;
    // The header's kid picks the key; without one, only a client with a single key matches.
    let key = match &header.kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid.as_str())),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
    .ok_or(Refused::Signature)?;
    let alg = algorithm(key.alg).ok_or(Refused::Signature)?;
    if header.alg != alg {
        return Err(Refused::Signature);
    }
    let dk = decoding_key(key).ok_or(Refused::Signature)?;
    // Only the signature here; the claims are checked below on the request's clock.
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(assertion, &dk, &v)
        .map_err(|_| Refused::Signature)?
        .claims;
    let bad = |s: &str| Err(Refused::Claims(s.to_owned()));
    let id = client.client_id.as_str();
    if claims.iss.as_deref() != Some(id) || claims.sub.as_deref() != Some(id) {
        return bad("the client assertion's iss and sub must both be the client_id");
    }
    if !claims.aud.names_any(audiences) {
        return bad(
            "the client assertion's aud must name this server: its issuer or its token endpoint URL",
        );
    }
    let Some(exp) = claims.exp else {
        return bad("the client assertion has no exp");
    };
    if exp + SKEW <= now {
        return bad("the client assertion has expired; sign a new one per request");
    }
    if exp > now + MAX_LIFETIME + SKEW {
        return bad(
            "the client assertion's exp is more than 5 minutes ahead; sign short-lived assertions",
        );
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + SKEW)
        || claims.iat.is_some_and(|iat| iat > now + SKEW)
    {
        return bad(
            "the client assertion is not valid yet (nbf or iat in the future); check the client's clock",
        );
    }
    let Some(jti) = claims.jti.filter(|j| !j.is_empty() && j.len() <= 256) else {
        return bad(
            "the client assertion has no jti (or one over 256 bytes); give each assertion a unique jti",
        );
    };
    Ok(Verified { jti, exp })
}
