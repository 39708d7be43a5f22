//! Tessera's API: the four custom resources, their validation, and the resolved model.
#![forbid(unsafe_code)]

pub mod api_proxy;
pub mod auth_policy;
pub mod common;
pub mod conditions;
pub mod crd;
pub mod credential;
pub mod duration;
pub mod manifest;
pub mod model;
pub mod names;
pub mod policy_data;
pub mod role;
pub mod secret;
pub mod validate;

pub use api_proxy::{ApiProxy, ApiProxySpec};
pub use auth_policy::{AuthPolicy, AuthPolicySpec};
pub use credential::{Credential, CredentialSpec};
pub use role::{Role, RoleSpec};
