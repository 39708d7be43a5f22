//! Token formats and keys: JWT access tokens, sealed opaque and refresh tokens, the key set.

pub mod claims;
pub mod jwt;

// The key set and sealing live in `tessera-keys`, shared with the operator that writes the set.
pub use tessera_keys::{sealed, set as keys};
