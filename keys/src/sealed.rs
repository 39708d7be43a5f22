//! Opaque access tokens and refresh tokens: their claims sealed with AES-256-GCM under a key from
//! the key set, so any replica with the same keys can open them and no database is needed.
//!
//! Format: `<prefix>.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`, where the prefix (`tat` for
//! access, `trt` for refresh) and the kid are bound as associated data, so a refresh token can
//! never be presented as an access token or re-labelled with another key.

use crate::set::KeySet;
use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which kind of sealed token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An opaque access token.
    Access,
    /// A refresh token.
    Refresh,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Access => "tat",
            Kind::Refresh => "trt",
        }
    }
}

/// Longest sealed token accepted for opening, so hostile input is refused before decoding.
pub const MAX_SEALED_LEN: usize = 8192;

fn aad(kind: Kind, kid: &str) -> Vec<u8> {
    format!("tessera/{}/v1/{kid}", kind.prefix()).into_bytes()
}

/// Seals `claims` under the key set's newest encryption key.
pub fn seal<T: Serialize>(
    keys: &KeySet,
    kind: Kind,
    claims: &T,
) -> Result<String, serde_json::Error> {
    let k = keys.sealing_key();
    let mut data = serde_json::to_vec(claims)?;
    let nonce = match k
        .key
        .seal_in_place_append_tag(Aad::from(aad(kind, &k.kid)), &mut data)
    {
        Ok(n) => n,
        // Sealing fails only for inputs beyond AES-GCM's limits (gigabytes).
        Err(_) => return Err(serde::ser::Error::custom("sealing failed")),
    };
    let mut raw = Vec::with_capacity(NONCE_LEN + data.len());
    raw.extend_from_slice(nonce.as_ref());
    raw.extend_from_slice(&data);
    let mut out = format!("{}.{}.", kind.prefix(), k.kid);
    URL_SAFE_NO_PAD.encode_string(raw, &mut out);
    Ok(out)
}

/// Opens a sealed token of `kind`; `None` for anything that is not one this key set sealed.
pub fn open<T: DeserializeOwned>(keys: &KeySet, kind: Kind, token: &str) -> Option<T> {
    if token.len() > MAX_SEALED_LEN {
        return None;
    }
    let rest = token.strip_prefix(kind.prefix())?.strip_prefix('.')?;
    let (kid, body) = rest.split_once('.')?;
    let k = keys.opening_key(kid)?;
    let mut raw = URL_SAFE_NO_PAD.decode(body).ok()?;
    if raw.len() < NONCE_LEN + 16 {
        return None;
    }
    let nonce = Nonce::try_assume_unique_for_key(&raw[..NONCE_LEN]).ok()?;
    let mut data = raw.split_off(NONCE_LEN);
    let plain = k
        .key
        .open_in_place(nonce, Aad::from(aad(kind, kid)), &mut data)
        .ok()?;
    serde_json::from_slice(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::set::KeySet;

    fn keys() -> KeySet {
        KeySet::from_file(&KeySet::generate_file(jiff::Timestamp::now()).expect("gen"))
            .expect("parse")
    }

    #[test]
    fn round_trip_and_kind_separation() {
        let k = keys();
        let t = seal(&k, Kind::Refresh, &serde_json::json!({"sub": "a"})).expect("seal");
        assert!(t.starts_with("trt."));
        let v: serde_json::Value = open(&k, Kind::Refresh, &t).expect("opens");
        assert_eq!(v["sub"], "a");
        assert!(
            open::<serde_json::Value>(&k, Kind::Access, &t).is_none(),
            "a refresh token is not an access token"
        );
        let relabelled = t.replacen("trt.", "tat.", 1);
        assert!(
            open::<serde_json::Value>(&k, Kind::Access, &relabelled).is_none(),
            "the prefix is authenticated"
        );
    }

    #[test]
    fn tampering_other_keys_and_garbage_are_refused() {
        let k = keys();
        let t = seal(&k, Kind::Access, &serde_json::json!({"sub": "a"})).expect("seal");
        let mut bytes = t.clone().into_bytes();
        let last = bytes.len() - 5;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert!(open::<serde_json::Value>(&k, Kind::Access, &tampered).is_none());
        assert!(
            open::<serde_json::Value>(&keys(), Kind::Access, &t).is_none(),
            "another key set"
        );
        for junk in [
            "",
            "tat",
            "tat..",
            "tat.x.y",
            "tat.enc.%%%",
            &"tat.a.".repeat(3000),
        ] {
            assert!(
                open::<serde_json::Value>(&k, Kind::Access, junk).is_none(),
                "{junk:.20}"
            );
        }
    }
}
