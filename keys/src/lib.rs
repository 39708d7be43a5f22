//! Tessera's key set, shared by the operator (which generates, rotates and writes it) and the
//! token server (which reads it, signs with it and seals with it): the format lives here, not in
//! either binary's crate.
//!
//! - [`set`]: the stored format (`keyset.json`), parsing and validation, generation, signing
//!   keys with their publication timeline, the JWKS, and the client-secret verifier key.
//! - [`sealed`]: AES-256-GCM sealing of opaque and refresh tokens under the set's keys.
#![forbid(unsafe_code)]

pub mod sealed;
pub mod set;

pub use set::{KeySet, KeySetError, KeySetFile, SECRET_DATA_KEY, SigningKey};
