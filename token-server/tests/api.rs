//! The token server's HTTP API, end to end through the router, on folders of real manifests.
//! One test binary (one link) with a module per concern under `tests/api/`.

#[path = "api/harness.rs"]
mod harness;

#[path = "api/assertions.rs"]
mod assertions;
#[path = "api/audit.rs"]
mod audit;
#[path = "api/errors.rs"]
mod errors;
#[path = "api/grants.rs"]
mod grants;
#[path = "api/introspection.rs"]
mod introspection;
#[path = "api/loopback.rs"]
mod loopback;
#[path = "api/reload.rs"]
mod reload;
#[path = "api/remote_jwks.rs"]
mod remote_jwks;
#[path = "api/tls.rs"]
mod tls;
