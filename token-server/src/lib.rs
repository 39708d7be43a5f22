//! Tessera token server: issues OAuth2 / JWT access tokens from the resolved model.
//!
//! ```text
//! source (dir: folder of manifests, watched) ──► resolve ──► Served {Snapshot, KeySet, JWKS}
//!                                                               │ ArcSwap (one atomic swap)
//! request ─► http::request (limits, strict form) ─► http::client_auth ─► auth (verifier, lockout)
//!         ─► grant::{client_credentials, password, refresh_token} ─► token::{jwt, sealed} ─► response
//! admin: /healthz /readyz /metrics
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod assertion;
pub mod audit;
pub mod auth;
pub mod error;
pub mod form;
pub mod grant;
pub mod http;
pub mod lockout;
pub mod metadata;
pub mod metrics;
pub mod mtls;
pub mod passwords;
pub mod remote_jwks;
pub mod revocation;
pub mod serve;
pub mod source;
pub mod state;
pub mod store;
pub mod tls;
pub mod token;
