//! The manifest reader (the folder source, `kubectl apply`-style YAML): any text, never a panic,
//! and errors never quote a Secret's values.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = tessera_crds::manifest::parse(text, "fuzz.yaml");
});
