//! Token parsers: a JWT before verification, a sealed (opaque or refresh) token under a real key
//! set, and the key-set JSON itself. Any input, never a panic; nothing forged opens.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use tessera_token_server::token::keys::{KeySet, KeySetFile};
use tessera_token_server::token::{jwt, sealed};

static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    let file = KeySet::generate_file(jiff::Timestamp::now()).expect("generate");
    KeySet::from_file(&file).expect("parse")
});

fuzz_target!(|data: &[u8]| {
    let _ = KeySetFile::from_json(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = jwt::parse_unverified(text);
    // Random bytes cannot carry a valid AEAD tag under a fresh key.
    assert!(sealed::open::<serde_json::Value>(&KEYS, sealed::Kind::Access, text).is_none());
    assert!(sealed::open::<serde_json::Value>(&KEYS, sealed::Kind::Refresh, text).is_none());
});
