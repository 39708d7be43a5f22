//! The resolved model: a pure function from a set of resources to an immutable [`Snapshot`]
//! indexed for the token server's hot path, and the problems of every object.
//!
//! ```text
//! ResourceSet (ApiProxy, AuthPolicy, Credential, Role, Secret)
//!     │ validate each object (crate::validate)      → Invalid
//!     │ AuthPolicies → Policy (+ user pool)          → SecretNotFound, UserPoolInvalid
//!     │ ApiProxies → audiences (older wins)          → AudienceConflict
//!     │ Roles → (scope, audiences)                   → ProxyNotFound
//!     │ Credentials, policy-managed ApiProxies → Client candidates
//!     │                                              → PolicyNotFound, SecretNotFound, …
//!     │ client_id conflicts (older wins)             → ClientIdConflict
//!     ▼
//! Snapshot { client_id → Arc<Client>, audience → ApiProxy, Report }
//! ```
//!
//! Rules: a Credential may obtain tokens for the ApiProxies in its ACL plus those its Roles
//! grant; its scopes are its Roles' scope names; retired proxies grant nothing; disabled or
//! expired Credentials authenticate nothing. A missing ApiProxy or Role only removes what it would
//! have granted; a missing policy, secret or client_id stops that one client. No problem of one
//! object stops another from resolving.

mod problem;
mod resolve;
mod snapshot;

pub use problem::{Kind, ObjectRef, Problem, Reason, Report};
pub use resolve::{ResourceSet, credential_secret_name, proxy_key_secret_name, resolve};
pub use snapshot::{
    AssertionKey, Client, ClientCa, ClientKind, Counts, Limits, Policy, RefreshPolicy,
    SecretVerifier, Snapshot, UserPool,
};
