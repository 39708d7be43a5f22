//! Token formats and keys: JWT access tokens, sealed opaque and refresh tokens, the key set.

pub mod claims;
pub mod jwt;
pub mod keys;
pub mod sealed;
