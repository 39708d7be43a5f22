//! Token formats and keys.

pub mod keys;
