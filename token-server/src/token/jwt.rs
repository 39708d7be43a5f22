//! JWT access tokens (RFC 9068), signed with the key set's parsed key pairs.
//!
//! The JOSE header is serialized once per key ([`SigningKey::header_b64`]); per token we only
//! serialize the claims, sign, and join the three base64url parts (JWS compact serialization,
//! RFC 7515 §7.1). The signature itself comes from aws-lc-rs.

use super::claims::AccessClaims;
use super::keys::SigningKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Claims did not serialize.
    #[error("serializing claims")]
    Serialize(#[from] serde_json::Error),
    /// The signature failed.
    #[error("signing failed")]
    Sign,
}

/// Signs `claims` with `key`.
pub fn mint(key: &SigningKey, claims: &AccessClaims) -> Result<String, MintError> {
    let payload = serde_json::to_vec(claims)?;
    let mut out = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 360);
    out.push_str(&key.header_b64);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
    let sig = key.sign(out.as_bytes()).map_err(|_| MintError::Sign)?;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut out);
    Ok(out)
}

/// The parts of a JWT this server may have signed, before verification.
pub struct UnverifiedJwt<'a> {
    /// `kid` from the header.
    pub kid: String,
    /// `alg` from the header. Untrusted: the caller checks it is the algorithm of the key `kid`
    /// names (the key decides the algorithm, RFC 8725 §3.1).
    pub alg: String,
    /// `header.payload`, the signing input.
    pub signing_input: &'a str,
    /// Decoded payload.
    pub payload: Vec<u8>,
    /// Decoded signature.
    pub signature: Vec<u8>,
}

/// Splits a compact JWS and decodes its parts, without trusting anything in it.
pub fn parse_unverified(token: &str) -> Option<UnverifiedJwt<'_>> {
    let mut parts = token.splitn(3, '.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if s.contains('.') {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Header {
        kid: String,
        alg: String,
    }
    let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    if !matches!(header.alg.as_str(), "RS256" | "ES256" | "EdDSA") {
        return None;
    }
    Some(UnverifiedJwt {
        kid: header.kid,
        alg: header.alg,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload: URL_SAFE_NO_PAD.decode(p).ok()?,
        signature: URL_SAFE_NO_PAD.decode(s).ok()?,
    })
}
