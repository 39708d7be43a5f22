//! Subject-DN bindings (RFC 4514 strings): any text, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = tessera_token_server::mtls::parse_dn(text);
});
