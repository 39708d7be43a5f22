//! Tessera operator: reconciles ApiProxy, AuthPolicy, Credential and Role into generated
//! Secrets, published secret verifiers, the key set and status.
//!
//! Pure decisions ([`plan`], [`lease::decide`]) are separate from the I/O that carries them out
//! ([`apply`], the one write path, and [`run`], the loop), so they are tested without a cluster.
#![forbid(unsafe_code)]

pub mod admin;
pub mod apply;
pub mod audit;
pub mod backoff;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod plan;
pub mod run;

/// The one field manager of every write (server-side apply, creates, Lease updates).
pub const FIELD_MANAGER: &str = "tessera-operator";
