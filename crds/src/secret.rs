//! Client-secret verifiers: what the token server checks a presented secret against, so that it
//! never needs the plaintext (DESIGN.md, least privilege).
//!
//! A verifier is HMAC-SHA256 of the secret under a server-side key (the "verifier key", kept in
//! the keys Secret). Generated secrets carry 256 bits of entropy, so a fast keyed hash is safe and
//! keeps the token endpoint O(1); the key means a leaked verifier list cannot be brute-forced even
//! for a weak user-supplied secret. Comparison is constant-time.
//!
//! Each verifier is bound to its object: the HMAC input starts with the object's uid (or, for a
//! folder of manifests without uids, its kind, namespace and name). A verifier copied into
//! another Credential's status (the token server may patch `credentials/status`) then verifies
//! nothing there.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Data key of a client secret in a Secret, unless a reference names another.
pub const CLIENT_SECRET_KEY: &str = "client_secret";
/// Prefix of a published verifier. (`hmac-sha256:`, unbound verifiers of earlier versions, are
/// refused; the operator rewrites them.)
pub const VERIFIER_PREFIX: &str = "hmac-sha256-bound:";

/// What a verifier is bound to: the object's uid, or its kind, namespace and name when it has no
/// uid (manifests in a folder).
pub fn verifier_binding(uid: Option<&str>, kind: &str, namespace: &str, name: &str) -> String {
    match uid.filter(|u| !u.is_empty()) {
        Some(uid) => format!("uid:{uid}"),
        None => format!("ref:{kind}/{namespace}/{name}"),
    }
}

/// The key verifiers are computed under. Its `Debug` never prints the key.
#[derive(Clone)]
pub struct VerifierKey(Vec<u8>);

impl std::fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifierKey(<redacted>)")
    }
}

impl VerifierKey {
    /// A key from raw bytes (at least 32 are expected; the keys Secret holds 32 random bytes).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The verifier of `secret` for the object `binding` names ([`verifier_binding`]).
    pub fn verifier(&self, binding: &str, secret: &[u8]) -> Verifier {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        // Length-prefixed, so no (binding, secret) pair can pose as another.
        mac.update(b"tessera-verifier-v2\0");
        mac.update(&(binding.len() as u64).to_be_bytes());
        mac.update(binding.as_bytes());
        mac.update(secret);
        Verifier(mac.finalize().into_bytes().into())
    }
}

/// A keyed hash of one client secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Verifier(pub [u8; 32]);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(<redacted>)")
    }
}

impl Verifier {
    /// Constant-time comparison with another verifier.
    pub fn ct_eq(&self, other: &Verifier) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The published form, `hmac-sha256:<base64url>`.
    pub fn to_published(&self) -> String {
        format!("{VERIFIER_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }

    /// Parses the published form.
    pub fn from_published(s: &str) -> Option<Verifier> {
        let b64 = s.strip_prefix(VERIFIER_PREFIX)?;
        let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
        Some(Verifier(bytes.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_round_trips_and_depends_on_key_and_secret() {
        let k1 = VerifierKey::new(vec![1u8; 32]);
        let k2 = VerifierKey::new(vec![2u8; 32]);
        let v = k1.verifier("uid:a", b"s3cret");
        assert!(v.ct_eq(&k1.verifier("uid:a", b"s3cret")));
        assert!(!v.ct_eq(&k1.verifier("uid:a", b"s3cret!")));
        assert!(!v.ct_eq(&k2.verifier("uid:a", b"s3cret")));
        assert!(
            !v.ct_eq(&k1.verifier("uid:b", b"s3cret")),
            "another object's verifier of the same secret differs: a copy is useless"
        );
        assert!(
            !k1.verifier("uid:ab", b"c")
                .ct_eq(&k1.verifier("uid:a", b"bc")),
            "the binding is length-prefixed"
        );
        let published = v.to_published();
        assert!(published.starts_with("hmac-sha256-bound:"));
        assert_eq!(
            Verifier::from_published(&published.replace("-bound", "")),
            None,
            "unbound verifiers of earlier versions are refused"
        );
        assert_eq!(Verifier::from_published(&published), Some(v));
        assert_eq!(Verifier::from_published("sha1:abc"), None);
        assert_eq!(Verifier::from_published("hmac-sha256:!!"), None);
        assert_eq!(Verifier::from_published("hmac-sha256:AAAA"), None);
    }

    #[test]
    fn debug_never_prints_key_material() {
        let k = VerifierKey::new(b"super-secret-key-material-000000".to_vec());
        assert!(!format!("{k:?}").contains("super"));
        assert_eq!(
            format!("{:?}", k.verifier("uid:x", b"x")),
            "Verifier(<redacted>)"
        );
    }
}
