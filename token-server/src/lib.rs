//! Tessera token server.
#![forbid(unsafe_code)]

pub mod token;
