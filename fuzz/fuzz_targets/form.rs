//! The strict form decoder of every OAuth endpoint: any bytes, never a panic; what it accepts
//! has no repeated single-valued parameter and no control characters.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_token_server::form::Params;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Params::parse(data) {
        for name in ["grant_type", "client_id", "client_secret", "scope", "username", "password"] {
            if let Some(v) = p.get(name) {
                assert!(!v.is_empty(), "empty values count as absent");
                assert!(!v.chars().any(|c| c.is_control() && c != '\t'));
            }
        }
    }
});
