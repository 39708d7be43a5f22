//! The API server's audit log, read back: what each identity asked for and what it was told.
//! Tests use it where the fake API server used to count requests: an independent record of
//! every request, kept by the real server.

use serde_json::Value;

/// One completed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …
    pub verb: String,
    /// The authenticated user (a client certificate's CN, `system:serviceaccount:NS:NAME`, …).
    pub user: String,
    /// The resource (`secrets`, `credentials`, …), empty for non-resource URLs.
    pub resource: String,
    /// The subresource (`status`), or empty.
    pub subresource: String,
    /// The API group (empty for the core group).
    pub group: String,
    /// The namespace, or empty.
    pub namespace: String,
    /// The object's name, or empty.
    pub name: String,
    /// The HTTP status code answered.
    pub code: u16,
    /// The request URI.
    pub uri: String,
}

impl AuditEvent {
    /// A write: create, update, patch, delete or deletecollection.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    fn parse(v: &Value) -> Option<AuditEvent> {
        if v["stage"] != "ResponseComplete" {
            return None;
        }
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let o = &v["objectRef"];
        Some(AuditEvent {
            verb: s(&v["verb"]),
            user: s(&v["user"]["username"]),
            resource: s(&o["resource"]),
            subresource: s(&o["subresource"]),
            group: s(&o["apiGroup"]),
            namespace: s(&o["namespace"]),
            name: s(&o["name"]),
            code: u16::try_from(v["responseStatus"]["code"].as_u64().unwrap_or(0)).unwrap_or(0),
            uri: s(&v["requestURI"]),
        })
    }
}

/// The events in `text` (JSON lines), skipping any line not yet complete.
pub fn parse(text: &str) -> Vec<AuditEvent> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| AuditEvent::parse(&v))
        .collect()
}

/// The audit policy: metadata (never bodies: Secrets would land in the log) of every request,
/// once, when it completes.
pub const POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
";
