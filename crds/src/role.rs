//! Role: a scope and the ApiProxies it grants.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A scope name and the ApiProxies it grants. Credentials hold Roles; a token's `scope` lists
/// the scope names of the Roles granted.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "Role",
    plural = "roles",
    namespaced,
    status = "RoleStatus",
    shortname = "trole",
    category = "tessera",
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".status.scope"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    /// The scope token (RFC 6749 §3.3). Default: the Role's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[!#-\[\]-~]+$"))]
    pub scope: Option<String>,
    /// Names of the ApiProxies this Role grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")))]
    pub api_proxies: Vec<String>,
    /// What the Role is for, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

/// Observed state of a Role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions; `Ready` says whether every granted ApiProxy exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The scope in effect (the spec's, or the Role's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Role {
    /// The scope this Role grants: the spec's, or the Role's name.
    pub fn scope(&self) -> &str {
        self.spec
            .scope
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}
