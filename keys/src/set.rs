//! The key set: JWT signing keys, the AEAD keys that seal opaque and refresh tokens, and the key
//! client-secret verifiers are computed under.
//!
//! On disk (a Secret named `tessera-keys`, data key `keyset.json`; the operator writes the same),
//! it is JSON:
//!
//! ```json
//! {
//!   "version": 1,
//!   "signing": [{"kid": "es256-20261122", "alg": "ES256", "pkcs8": "<base64 DER>",
//!                "activeFrom": "2026-11-22T10:00:00Z", "retireAfter": null}],
//!   "encryption": [{"kid": "enc-20261122", "key": "<base64 32 bytes>", "createdAt": "2026-11-22T10:00:00Z"}],
//!   "verifierKey": "<base64 32 bytes>"
//! }
//! ```
//!
//! A signing key is published in the JWKS as soon as it is in the set and until `retireAfter`;
//! it signs from `activeFrom` (the newest active key per algorithm signs). Publishing before
//! signing is how rotation avoids breaking validators that cached the JWKS. The newest encryption
//! key seals; every one listed still opens.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tessera_crds::auth_policy::SigningAlgorithm;
use tessera_crds::secret::VerifierKey;

/// Version of the key-set format.
pub const FORMAT_VERSION: u32 = 1;
/// Data key of the key set in its Secret.
pub const SECRET_DATA_KEY: &str = "keyset.json";

/// The key set as stored. Its `Debug` shows kids only.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySetFile {
    /// Format version, 1.
    pub version: u32,
    /// Signing keys.
    pub signing: Vec<SigningKeyFile>,
    /// Encryption keys for opaque and refresh tokens.
    pub encryption: Vec<EncryptionKeyFile>,
    /// Base64 key for client-secret verifiers.
    pub verifier_key: String,
}

impl KeySetFile {
    /// Parses the JSON form. Errors name the field and the kind of problem; serde's own message
    /// is not used, as it quotes the offending value (`invalid type: string "MIIEvg…"`).
    pub fn from_json(json: &[u8]) -> Result<KeySetFile, KeySetError> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let file: KeySetFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            KeySetError::Format {
                path,
                problem: match inner.classify() {
                    serde_json::error::Category::Io | serde_json::error::Category::Syntax => {
                        "not JSON"
                    }
                    serde_json::error::Category::Eof => "the text ends early",
                    serde_json::error::Category::Data => {
                        "a missing or unknown field, or a value of the wrong type"
                    }
                },
                line: inner.line(),
                column: inner.column(),
            }
        })?;
        de.end().map_err(|e| KeySetError::Format {
            path: ".".into(),
            problem: "text after the JSON document",
            line: e.line(),
            column: e.column(),
        })?;
        Ok(file)
    }
}

impl std::fmt::Debug for KeySetFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySetFile")
            .field("version", &self.version)
            .field("signing", &self.signing)
            .field("encryption", &self.encryption)
            .finish_non_exhaustive()
    }
}

/// One signing key as stored.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKeyFile {
    /// Key id (`kid`).
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlgorithm,
    /// Base64 PKCS#8 DER private key.
    pub pkcs8: String,
    /// When it starts signing.
    pub active_from: Timestamp,
    /// When it leaves the JWKS (after the last token it signed has expired).
    #[serde(default)]
    pub retire_after: Option<Timestamp>,
    /// When it was added to the set (published in the JWKS). `activeFrom - publishedFrom` is its
    /// prepublication window, which every replica honours from the moment *it* learns of the
    /// key (see [`KeyArrivals`]). Absent in sets written before it existed: no hold-back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_from: Option<Timestamp>,
}

impl std::fmt::Debug for SigningKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyFile")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// One encryption key as stored.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionKeyFile {
    /// Key id, carried in each sealed token.
    pub kid: String,
    /// Base64 256-bit AES-GCM key.
    pub key: String,
    /// Creation time: the newest key seals.
    pub created_at: Timestamp,
}

impl std::fmt::Debug for EncryptionKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKeyFile")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Why a key set was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// Not JSON of the documented shape. It names where and what kind of problem, never the
    /// value found there: in a key set that value may be private key material.
    #[error(
        "key set is not valid JSON of the documented format: {problem} at `{path}` (line {line}, column {column}); see the key-set format in the README"
    )]
    Format {
        /// The field, e.g. `signing[0].pkcs8` (`.` for the document itself).
        path: String,
        /// What kind of problem.
        problem: &'static str,
        /// Where, in the text.
        line: usize,
        /// Where, in the text.
        column: usize,
    },
    /// A JWK did not serialize (a bug, not bad input).
    #[error("serializing a public JWK failed")]
    Jwk,
    /// An unknown format version.
    #[error("key set version {0} is not supported; this server reads version {FORMAT_VERSION}")]
    Version(u32),
    /// A key does not parse.
    #[error("key `{kid}`: {message}")]
    Key {
        /// Its kid.
        kid: String,
        /// What is wrong.
        message: String,
    },
    /// Two keys share a kid.
    #[error("kid `{0}` is used by two keys; every key needs its own kid")]
    DuplicateKid(String),
    /// Nothing to seal with.
    #[error("the key set has no encryption key; opaque and refresh tokens need one")]
    NoEncryptionKey,
    /// The verifier key is missing or short.
    #[error("verifierKey must be base64 of at least 32 bytes")]
    VerifierKey,
    /// Key generation failed.
    #[error("generating a key failed")]
    Generate,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A parsed signing key, ready to sign.
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlgorithm,
    /// Signs from.
    pub active_from: Timestamp,
    /// Leaves the JWKS after.
    pub retire_after: Option<Timestamp>,
    /// Entered the set (see [`SigningKeyFile::published_from`]).
    pub published_from: Option<Timestamp>,
    /// base64url of the JOSE header `{"alg":…,"typ":"at+jwt","kid":…}`, computed once.
    pub header_b64: String,
    pair: Pair,
    jwk: serde_json::Value,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Signs `message` (the JWS signing input).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        match &self.pair {
            Pair::Ec(k) => Ok(k.sign(&self.rng, message)?.as_ref().to_vec()),
            Pair::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
            Pair::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut sig)?;
                Ok(sig)
            }
        }
    }

    /// Verifies a signature made by this key.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let (alg, public): (&dyn signature::VerificationAlgorithm, &[u8]) = match &self.pair {
            Pair::Ec(k) => (&signature::ECDSA_P256_SHA256_FIXED, k.public_key().as_ref()),
            Pair::Ed(k) => (&signature::ED25519, k.public_key().as_ref()),
            Pair::Rsa(k) => (
                &signature::RSA_PKCS1_2048_8192_SHA256,
                k.public_key().as_ref(),
            ),
        };
        signature::UnparsedPublicKey::new(alg, public)
            .verify(message, sig)
            .is_ok()
    }

    /// The public JWK.
    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    fn published_at(&self, now: Timestamp) -> bool {
        self.retire_after.is_none_or(|t| now < t)
    }

    fn active_at(&self, now: Timestamp) -> bool {
        self.active_from <= now && self.published_at(now)
    }
}

/// When this replica first saw each signing key of its key set; see [`KeySet::hold_back`].
#[derive(Debug, Default)]
pub struct KeyArrivals {
    primed: bool,
    /// kid → when this process first saw it (`None`: it was in the first set this process read).
    first_seen: HashMap<String, Option<Timestamp>>,
}

/// A parsed AEAD key.
pub struct SealingKey {
    /// Key id, carried in each sealed token.
    pub kid: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// The AES-256-GCM key.
    pub key: aws_lc_rs::aead::RandomizedNonceKey,
}

/// The parsed key set.
pub struct KeySet {
    signing: Vec<SigningKey>,
    sealing: Vec<SealingKey>,
    verifier_key: VerifierKey,
    /// True if generated at start rather than read (tokens will not survive a restart).
    pub ephemeral: bool,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("signing", &self.signing)
            .field(
                "sealing",
                &self.sealing.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

fn jws_alg(alg: SigningAlgorithm) -> jsonwebtoken::Algorithm {
    match alg {
        SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        SigningAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
    }
}

fn parse_signing(f: &SigningKeyFile) -> Result<SigningKey, KeySetError> {
    let err = |message: String| KeySetError::Key {
        kid: f.kid.clone(),
        message,
    };
    if f.kid.is_empty()
        || f.kid.len() > 128
        || !f
            .kid
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\\')
    {
        // The kid is not quoted back: a kid that breaks the rules may be a pasted key.
        return Err(KeySetError::Key {
            kid: "(invalid)".into(),
            message: "a kid has 1 to 128 printable ASCII characters, no quotes or backslashes"
                .into(),
        });
    }
    let der = STANDARD
        .decode(&f.pkcs8)
        .map_err(|_| err("pkcs8 is not base64".into()))?;
    let bad = |what: &str| err(format!("pkcs8 is not a PKCS#8 {what} private key"));
    use jsonwebtoken::jwk::{
        AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, OctetKeyPairParameters,
        OctetKeyPairType,
    };
    let (pair, mut jwk) = match f.alg {
        SigningAlgorithm::ES256 => {
            let k = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .map_err(|_| bad("P-256"))?;
            let enc = jsonwebtoken::EncodingKey::from_ec_der(&der);
            let jwk = Jwk::from_encoding_key(&enc, jws_alg(f.alg))
                .map_err(|e| err(format!("no public JWK: {e}")))?;
            (Pair::Ec(k), jwk)
        }
        SigningAlgorithm::EdDSA => {
            let k = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| bad("Ed25519"))?;
            // jsonwebtoken cannot derive an Ed25519 JWK from a PKCS#8 v2 key; the public key is
            // all an OKP JWK holds (RFC 8037), so build it with its types from the parsed pair.
            let mut jwk = Jwk {
                common: Default::default(),
                algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: URL_SAFE_NO_PAD.encode(k.public_key().as_ref()),
                }),
            };
            jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
            (Pair::Ed(k), jwk)
        }
        SigningAlgorithm::RS256 => {
            let k = RsaKeyPair::from_pkcs8(&der).map_err(|_| bad("RSA"))?;
            if k.public_modulus_len() < 256 {
                return Err(err("RSA keys must have at least 2048 bits".into()));
            }
            // jsonwebtoken reads RSA keys as PKCS#1 for the JWK's public components.
            let pkcs1 = rsa_pkcs1(&k).map_err(|_| bad("RSA"))?;
            let enc = jsonwebtoken::EncodingKey::from_rsa_der(&pkcs1);
            let jwk = Jwk::from_encoding_key(&enc, jws_alg(f.alg))
                .map_err(|e| err(format!("no public JWK: {e}")))?;
            (Pair::Rsa(k), jwk)
        }
    };
    jwk.common.key_id = Some(f.kid.clone());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let jwk = serde_json::to_value(&jwk).map_err(|_| KeySetError::Jwk)?;
    let header = serde_json::json!({"alg": f.alg.as_str(), "typ": "at+jwt", "kid": f.kid});
    Ok(SigningKey {
        kid: f.kid.clone(),
        alg: f.alg,
        active_from: f.active_from,
        retire_after: f.retire_after,
        published_from: f.published_from,
        header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
        pair,
        jwk,
        rng: SystemRandom::new(),
    })
}

/// PKCS#1 DER of an RSA key pair, via its PKCS#8 encoding.
fn rsa_pkcs1(k: &RsaKeyPair) -> Result<Vec<u8>, KeySetError> {
    let der =
        AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(k).map_err(|_| KeySetError::Generate)?;
    // PKCS#8 PrivateKeyInfo wraps the PKCS#1 RSAPrivateKey in its last OCTET STRING; aws-lc-rs
    // re-encodes it for us when parsing the PKCS#1 form, so we find it by parsing candidates.
    let bytes = der.as_ref();
    for start in 0..bytes.len().saturating_sub(4) {
        if bytes[start] == 0x04 {
            let (len, hdr) = match bytes[start + 1] {
                n if n < 0x80 => (n as usize, 2),
                0x81 => (bytes[start + 2] as usize, 3),
                0x82 => (
                    ((bytes[start + 2] as usize) << 8) | bytes[start + 3] as usize,
                    4,
                ),
                _ => continue,
            };
            if start + hdr + len == bytes.len() {
                let inner = &bytes[start + hdr..];
                if RsaKeyPair::from_der(inner).is_ok() {
                    return Ok(inner.to_vec());
                }
            }
        }
    }
    Err(KeySetError::Generate)
}

impl KeySet {
    /// Parses a stored key set.
    pub fn from_file(file: &KeySetFile) -> Result<KeySet, KeySetError> {
        if file.version != FORMAT_VERSION {
            return Err(KeySetError::Version(file.version));
        }
        let mut kids = std::collections::HashSet::new();
        let mut signing = Vec::with_capacity(file.signing.len());
        for f in &file.signing {
            if !kids.insert(f.kid.as_str()) {
                return Err(KeySetError::DuplicateKid(f.kid.clone()));
            }
            signing.push(parse_signing(f)?);
        }
        let mut sealing = Vec::with_capacity(file.encryption.len());
        for f in &file.encryption {
            if !kids.insert(f.kid.as_str()) {
                return Err(KeySetError::DuplicateKid(f.kid.clone()));
            }
            let err = |m: &str| KeySetError::Key {
                kid: f.kid.clone(),
                message: m.into(),
            };
            if f.kid.is_empty()
                || f.kid.len() > 64
                || f.kid.contains('.')
                || !f.kid.bytes().all(|c| c.is_ascii_graphic())
            {
                return Err(KeySetError::Key {
                    kid: "(invalid)".into(),
                    message: "an encryption kid has 1 to 64 printable ASCII characters and no `.`"
                        .into(),
                });
            }
            let raw = STANDARD
                .decode(&f.key)
                .map_err(|_| err("key is not base64"))?;
            if raw.len() != 32 {
                return Err(err("key must be 32 bytes (AES-256-GCM)"));
            }
            let key = aws_lc_rs::aead::RandomizedNonceKey::new(&aws_lc_rs::aead::AES_256_GCM, &raw)
                .map_err(|_| err("not an AES-256 key"))?;
            sealing.push(SealingKey {
                kid: f.kid.clone(),
                created_at: f.created_at,
                key,
            });
        }
        if sealing.is_empty() {
            return Err(KeySetError::NoEncryptionKey);
        }
        // Newest first: the first one seals.
        sealing.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        let vk = STANDARD
            .decode(&file.verifier_key)
            .map_err(|_| KeySetError::VerifierKey)?;
        if vk.len() < 32 {
            return Err(KeySetError::VerifierKey);
        }
        Ok(KeySet {
            signing,
            sealing,
            verifier_key: VerifierKey::new(vk),
            ephemeral: false,
        })
    }

    /// Parses the JSON form.
    pub fn from_json(json: &[u8]) -> Result<KeySet, KeySetError> {
        KeySet::from_file(&KeySetFile::from_json(json)?)
    }

    /// A fresh key set: one signing key per algorithm, active now, one encryption key and a
    /// verifier key. Used when no key set is configured (tokens do not survive a restart) and by
    /// the operator to start a set.
    pub fn generate_file(now: Timestamp) -> Result<KeySetFile, KeySetError> {
        let rng = SystemRandom::new();
        let stamp = now.strftime("%Y%m%d%H%M%S").to_string();
        let mut signing = Vec::new();
        for alg in [
            SigningAlgorithm::RS256,
            SigningAlgorithm::ES256,
            SigningAlgorithm::EdDSA,
        ] {
            let der: Vec<u8> = match alg {
                SigningAlgorithm::ES256 => {
                    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                        .map_err(|_| KeySetError::Generate)?
                        .as_ref()
                        .to_vec()
                }
                SigningAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| KeySetError::Generate)?
                    .as_ref()
                    .to_vec(),
                SigningAlgorithm::RS256 => {
                    let k = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                        .map_err(|_| KeySetError::Generate)?;
                    AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k)
                        .map_err(|_| KeySetError::Generate)?
                        .as_ref()
                        .to_vec()
                }
            };
            let mut id = [0u8; 4];
            rng.fill(&mut id).map_err(|_| KeySetError::Generate)?;
            signing.push(SigningKeyFile {
                kid: format!(
                    "{}-{stamp}-{}",
                    alg.as_str().to_lowercase(),
                    URL_SAFE_NO_PAD.encode(id)
                ),
                alg,
                pkcs8: STANDARD.encode(der),
                active_from: now,
                retire_after: None,
                published_from: Some(now),
            });
        }
        let mut enc = [0u8; 32];
        let mut vk = [0u8; 32];
        rng.fill(&mut enc).map_err(|_| KeySetError::Generate)?;
        rng.fill(&mut vk).map_err(|_| KeySetError::Generate)?;
        Ok(KeySetFile {
            version: FORMAT_VERSION,
            signing,
            encryption: vec![EncryptionKeyFile {
                kid: format!("enc-{stamp}"),
                key: STANDARD.encode(enc),
                created_at: now,
            }],
            verifier_key: STANDARD.encode(vk),
        })
    }

    /// The key that signs for `alg` at `now`: the newest active one.
    pub fn signer(&self, alg: SigningAlgorithm, now: Timestamp) -> Option<&SigningKey> {
        self.signing
            .iter()
            .filter(|k| k.alg == alg && k.active_at(now))
            .max_by_key(|k| k.active_from)
    }

    /// Holds back keys this replica learned of late: a key signs only once this replica has
    /// published it for its whole prepublication window, whatever the watch lag. A replica whose
    /// watch was in backoff when the operator rotated would otherwise learn the key after its
    /// `activeFrom` and sign with it at once, before any validator that caches this replica's
    /// JWKS could have fetched it (issue 20: 94 of 820 tokens refused after an API outage).
    /// Until then its predecessor keeps signing; it is still published, as retirement comes long
    /// after a successor starts.
    pub fn hold_back(&mut self, arrivals: &mut KeyArrivals, now: Timestamp) {
        let first_build = !arrivals.primed;
        arrivals.primed = true;
        let mut seen = HashMap::with_capacity(self.signing.len());
        for k in &mut self.signing {
            // On this process's first key set every key counts as published from its
            // `publishedFrom`: other replicas have served it since, and this one served nothing.
            let first = match arrivals.first_seen.get(&k.kid) {
                Some(t) => *t,
                None if first_build => None,
                None => Some(now),
            };
            seen.insert(k.kid.clone(), first);
            if let (Some(first), Some(published)) = (first, k.published_from) {
                let window = k.active_from.duration_since(published);
                if window.is_positive()
                    && let Ok(earliest) = first.checked_add(window)
                    && earliest > k.active_from
                {
                    k.active_from = earliest;
                }
            }
        }
        // Only the kids in the current set are remembered: the map is bounded by the set.
        arrivals.first_seen = seen;
    }

    /// A published key by kid (for verifying tokens this server signed).
    pub fn published(&self, kid: &str, now: Timestamp) -> Option<&SigningKey> {
        self.signing
            .iter()
            .find(|k| k.kid == kid && k.published_at(now))
    }

    /// The JWKS document at `now`: every key not yet retired, including those not yet signing.
    pub fn jwks(&self, now: Timestamp) -> serde_json::Value {
        let keys: Vec<_> = self
            .signing
            .iter()
            .filter(|k| k.published_at(now))
            .map(|k| k.jwk.clone())
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The next time the JWKS or the signing key changes by the clock alone.
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        self.signing
            .iter()
            .flat_map(|k| [Some(k.active_from), k.retire_after])
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// The key that seals new tokens.
    pub fn sealing_key(&self) -> &SealingKey {
        &self.sealing[0]
    }

    /// A key that opens tokens sealed under `kid`.
    pub fn opening_key(&self, kid: &str) -> Option<&SealingKey> {
        self.sealing.iter().find(|k| k.kid == kid)
    }

    /// The verifier key.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.verifier_key
    }

    /// Algorithms with a key signing at `now`.
    pub fn algorithms(&self, now: Timestamp) -> Vec<SigningAlgorithm> {
        let mut v: Vec<_> = self
            .signing
            .iter()
            .filter(|k| k.active_at(now))
            .map(|k| k.alg)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-22T12:00:00Z".parse().expect("ts")
    }

    #[test]
    fn generated_sets_parse_sign_and_verify_for_every_algorithm() {
        let file = KeySet::generate_file(now()).expect("generate");
        let json = serde_json::to_vec(&file).expect("json");
        let set = KeySet::from_json(&json).expect("parses");
        for alg in [
            SigningAlgorithm::RS256,
            SigningAlgorithm::ES256,
            SigningAlgorithm::EdDSA,
        ] {
            let k = set.signer(alg, now()).expect("a signer per algorithm");
            let sig = k.sign(b"message").expect("signs");
            assert!(k.verify(b"message", &sig));
            assert!(!k.verify(b"massage", &sig));
            assert_eq!(k.jwk()["kid"], k.kid.as_str());
            assert_eq!(k.jwk()["use"], "sig");
        }
        assert_eq!(set.jwks(now())["keys"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn a_key_learned_late_signs_only_after_this_replica_published_it_for_its_window() {
        let at = |s: &str| -> Timestamp { s.parse().expect("ts") };
        let mut file = KeySet::generate_file(at("2026-11-22T10:00:00Z")).expect("generate");
        let es = |f: &KeySetFile| {
            f.signing
                .iter()
                .find(|k| k.alg == SigningAlgorithm::ES256)
                .expect("es256")
                .clone()
        };
        let old = es(&file);
        let mut arrivals = KeyArrivals::default();
        // First set this process reads: keys count as published from `publishedFrom`.
        let mut set = KeySet::from_file(&file).expect("parses");
        set.hold_back(&mut arrivals, at("2026-11-22T11:00:00Z"));
        assert_eq!(
            set.signer(SigningAlgorithm::ES256, at("2026-11-22T11:00:00Z"))
                .map(|k| k.kid.clone()),
            Some(old.kid.clone())
        );
        // The operator added a successor at 11:00 signing from 11:08 (8 min prepublication);
        // this replica's watch lagged and it learns of it at 11:10, after its `activeFrom`.
        let next = KeySet::generate_file(at("2026-11-22T11:00:00Z")).expect("generate");
        let mut new = es(&next);
        new.active_from = at("2026-11-22T11:08:00Z");
        new.published_from = Some(at("2026-11-22T11:00:00Z"));
        let before = file.clone();
        file.signing.push(new.clone());
        let learned = at("2026-11-22T11:10:00Z");
        let mut set = KeySet::from_file(&file).expect("parses");
        set.hold_back(&mut arrivals, learned);
        let signer = |set: &KeySet, t: &str| {
            set.signer(SigningAlgorithm::ES256, at(t))
                .map(|k| k.kid.clone())
                .expect("a signer")
        };
        // Published at once, but the old key signs for the whole window from 11:10 ...
        assert!(set.published(&new.kid, learned).is_some());
        assert_eq!(signer(&set, "2026-11-22T11:10:00Z"), old.kid);
        assert_eq!(signer(&set, "2026-11-22T11:17:59Z"), old.kid);
        // ... and the new key from 11:18, also after a rebuild (the arrival is remembered).
        assert_eq!(signer(&set, "2026-11-22T11:18:00Z"), new.kid);
        let mut again = KeySet::from_file(&file).expect("parses");
        again.hold_back(&mut arrivals, at("2026-11-22T11:12:00Z"));
        assert_eq!(signer(&again, "2026-11-22T11:17:59Z"), old.kid);
        assert_eq!(signer(&again, "2026-11-22T11:18:00Z"), new.kid);
        assert_eq!(again.next_change(learned), Some(at("2026-11-22T11:18:00Z")));
        // A replica whose watch was on time (it saw the key at 11:00) holds nothing back.
        let mut timely = KeyArrivals::default();
        let mut set = KeySet::from_file(&before).expect("parses");
        set.hold_back(&mut timely, at("2026-11-22T10:30:00Z"));
        let mut set = KeySet::from_file(&file).expect("parses");
        set.hold_back(&mut timely, at("2026-11-22T11:00:00Z"));
        assert_eq!(signer(&set, "2026-11-22T11:08:00Z"), new.kid);
    }

    #[test]
    fn pre_published_keys_are_in_the_jwks_before_they_sign_and_retired_ones_leave() {
        let mut file = KeySet::generate_file(now()).expect("generate");
        let mut next = KeySet::generate_file(now())
            .expect("generate")
            .signing
            .remove(1);
        next.kid = "es256-next".into();
        next.active_from = "2026-11-22T12:30:00Z".parse().expect("ts");
        file.signing[1].retire_after = Some("2026-11-22T13:30:00Z".parse().expect("ts"));
        let old_kid = file.signing[1].kid.clone();
        file.signing.push(next);
        let set = KeySet::from_file(&file).expect("parses");
        let kids = |t: Timestamp| -> Vec<String> {
            set.jwks(t)["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        assert!(
            kids(now()).contains(&"es256-next".to_owned()),
            "published before it signs"
        );
        assert_eq!(
            set.signer(SigningAlgorithm::ES256, now())
                .map(|k| k.kid.clone()),
            Some(old_kid.clone())
        );
        let later: Timestamp = "2026-11-22T12:30:00Z".parse().expect("ts");
        assert_eq!(
            set.signer(SigningAlgorithm::ES256, later)
                .map(|k| k.kid.as_str()),
            Some("es256-next")
        );
        assert!(
            kids(later).contains(&old_kid),
            "the old key stays published"
        );
        let gone: Timestamp = "2026-11-22T13:30:00Z".parse().expect("ts");
        assert!(!kids(gone).contains(&old_kid));
        assert_eq!(set.next_change(now()), Some(later));
    }

    #[test]
    fn bad_key_sets_are_refused_with_the_reason() {
        let good = KeySet::generate_file(now()).expect("generate");
        let mut f = good.clone();
        f.version = 2;
        assert!(matches!(
            KeySet::from_file(&f),
            Err(KeySetError::Version(2))
        ));
        let mut f = good.clone();
        f.signing[1].pkcs8 = f.signing[0].pkcs8.clone();
        assert!(
            KeySet::from_file(&f)
                .expect_err("rsa key as es256")
                .to_string()
                .contains("PKCS#8 P-256")
        );
        let mut f = good.clone();
        f.signing[1].kid = f.signing[0].kid.clone();
        assert!(matches!(
            KeySet::from_file(&f),
            Err(KeySetError::DuplicateKid(_))
        ));
        let mut f = good.clone();
        f.encryption.clear();
        assert!(matches!(
            KeySet::from_file(&f),
            Err(KeySetError::NoEncryptionKey)
        ));
        let mut f = good.clone();
        f.encryption[0].key = STANDARD.encode([0u8; 16]);
        assert!(
            KeySet::from_file(&f)
                .expect_err("short")
                .to_string()
                .contains("32 bytes")
        );
        let mut f = good;
        f.verifier_key = "x".into();
        assert!(matches!(
            KeySet::from_file(&f),
            Err(KeySetError::VerifierKey)
        ));
        assert!(matches!(
            KeySet::from_json(b"{\"version\":1}"),
            Err(KeySetError::Format { .. })
        ));
    }

    #[test]
    fn format_errors_name_the_field_never_the_value() {
        let file = KeySet::generate_file(now()).expect("generate");
        let pkcs8 = file.signing[0].pkcs8.clone();
        let mut v = serde_json::to_value(&file).expect("json");
        // The review's case: key material where another type is expected, and in a field of the
        // wrong name, and as the whole document.
        v["signing"][0]["activeFrom"] = serde_json::Value::String(pkcs8.clone());
        let bad_type = serde_json::to_vec(&v).expect("json");
        let mut v2 = serde_json::to_value(&file).expect("json");
        v2["signing"][0]["alg"] = serde_json::Value::String(pkcs8.clone());
        let bad_alg = serde_json::to_vec(&v2).expect("json");
        let mut v3 = serde_json::to_value(&file).expect("json");
        v3["encryption"] = serde_json::Value::String(pkcs8.clone());
        let bad_shape = serde_json::to_vec(&v3).expect("json");
        let mut v4 = serde_json::to_value(&file).expect("json");
        v4["signing"][0]["kid"] = serde_json::Value::String(pkcs8.clone());
        let bad_kid = serde_json::to_vec(&v4).expect("json");
        for (doc, path) in [
            (bad_type, "signing[0].activeFrom"),
            (bad_alg, "signing[0].alg"),
            (bad_shape, "encryption"),
            (pkcs8.clone().into_bytes(), "."),
            (format!("\"{pkcs8}\"").into_bytes(), "."),
            (bad_kid, ""),
        ] {
            let e = KeySet::from_json(&doc).expect_err("refused").to_string();
            assert!(
                !e.contains(&pkcs8[..16]) && !e.contains(&pkcs8[pkcs8.len() - 16..]),
                "key material in the error: {e}"
            );
            assert!(e.contains(path), "{e} names {path}");
        }
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let file = KeySet::generate_file(now()).expect("generate");
        let set = KeySet::from_file(&file).expect("parses");
        let dbg = format!("{file:?}{set:?}");
        assert!(!dbg.contains(&file.signing[0].pkcs8[..20]) && !dbg.contains(&file.verifier_key));
    }
}
