//! The operator's errors: one type for every failed decision or write, and one [`ErrorKind`]
//! that names it in metrics (`tessera_operator_errors_total{error}`) and in Event reasons.

/// Why a pass, or one object's part of it, did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This replica does not hold the Lease, or its last renewal is older than the renew
    /// deadline: it writes nothing, so two replicas never both write.
    #[error(
        "not written: this replica no longer holds the operator Lease (another replica leads, or the Lease could not be renewed in time)"
    )]
    NotLeader,
    /// The API server refused or failed a write.
    #[error("{verb} failed: {source}")]
    Write {
        /// What was written (`create_secret`, `status`, `event`...).
        verb: &'static str,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// Reading an object back from the API server failed.
    #[error("re-reading {what} failed: {source}")]
    Read {
        /// What was read.
        what: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// The stored key set cannot be used; the message says why and what to do. It is not
    /// replaced: it may hold the keys of live tokens.
    #[error("{0}")]
    KeySetBlocked(String),
    /// The key set changed under every retry of a pass.
    #[error("writing the keys Secret kept conflicting: {0}")]
    KeySetConflicts(String),
    /// What AuthPolicies reference does not fit in the policy-data Secret.
    #[error(
        "the user pools and CA bundles AuthPolicies reference add up to {bytes} bytes, more than the {max} a Secret can carry; split large user pools across fewer policies or move users to an external identity provider"
    )]
    PolicyDataTooLarge {
        /// The size of the document.
        bytes: usize,
        /// The most a Secret carries.
        max: usize,
    },
    /// A document the operator builds could not be encoded (a bug, never input).
    #[error("encoding {what} failed: {source}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// What kind of failure an [`Error`] is: the metrics label and the Event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`Error::NotLeader`].
    NotLeader,
    /// A write refused with 409: someone wrote first; the next pass re-plans.
    Conflict,
    /// A write refused with 403: the operator's RBAC lacks it.
    Forbidden,
    /// A write refused because its namespace is being deleted.
    NamespaceTerminating,
    /// Any other API failure (5xx, timeouts, transport).
    Api,
    /// [`Error::KeySetBlocked`].
    KeySetBlocked,
    /// [`Error::KeySetConflicts`].
    KeySetConflicts,
    /// [`Error::PolicyDataTooLarge`].
    PolicyDataTooLarge,
    /// [`Error::Encode`].
    Encode,
    /// Not an error of a write: objects whose writes a pass held back (backing off after a
    /// failure, or their namespace is being deleted).
    Deferred,
}

impl ErrorKind {
    /// The `error` label of `tessera_operator_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::NotLeader => "not_leader",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NamespaceTerminating => "namespace_terminating",
            ErrorKind::Api => "api",
            ErrorKind::KeySetBlocked => "keys_blocked",
            ErrorKind::KeySetConflicts => "keys_conflict",
            ErrorKind::PolicyDataTooLarge => "policy_data_too_large",
            ErrorKind::Encode => "encode",
            ErrorKind::Deferred => "deferred",
        }
    }

    /// The reason of a Warning Event about it.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::NotLeader => "NotLeader",
            ErrorKind::Conflict => "WriteConflict",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::NamespaceTerminating => "NamespaceTerminating",
            ErrorKind::Api => "WriteFailed",
            ErrorKind::KeySetBlocked => "KeySetInvalid",
            ErrorKind::KeySetConflicts => "KeySetConflict",
            ErrorKind::PolicyDataTooLarge => "PolicyDataTooLarge",
            ErrorKind::Encode => "EncodingFailed",
            ErrorKind::Deferred => "Deferred",
        }
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotLeader => ErrorKind::NotLeader,
            Error::Write { source, .. } | Error::Read { source, .. } => api_kind(source),
            Error::KeySetBlocked(_) => ErrorKind::KeySetBlocked,
            Error::KeySetConflicts(_) => ErrorKind::KeySetConflicts,
            Error::PolicyDataTooLarge { .. } => ErrorKind::PolicyDataTooLarge,
            Error::Encode { .. } => ErrorKind::Encode,
        }
    }
}

fn api_kind(e: &kube::Error) -> ErrorKind {
    if crate::backoff::is_namespace_terminating(e) {
        return ErrorKind::NamespaceTerminating;
    }
    match e {
        kube::Error::Api(s) if s.code == 409 => ErrorKind::Conflict,
        kube::Error::Api(s) if s.code == 403 => ErrorKind::Forbidden,
        _ => ErrorKind::Api,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn every_kind_has_its_own_label_and_reason() {
        let all = [
            ErrorKind::NotLeader,
            ErrorKind::Conflict,
            ErrorKind::Forbidden,
            ErrorKind::NamespaceTerminating,
            ErrorKind::Api,
            ErrorKind::KeySetBlocked,
            ErrorKind::KeySetConflicts,
            ErrorKind::PolicyDataTooLarge,
            ErrorKind::Encode,
            ErrorKind::Deferred,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|k| k.label()).collect();
        let reasons: std::collections::HashSet<_> = all.iter().map(|k| k.reason()).collect();
        assert_eq!(labels.len(), all.len());
        assert_eq!(reasons.len(), all.len());
    }

    #[test]
    fn api_failures_are_told_apart_by_code_and_cause() {
        let w = |e| Error::Write {
            verb: "status",
            source: e,
        };
        assert_eq!(w(api(409, "Conflict", "stale")).kind(), ErrorKind::Conflict);
        assert_eq!(w(api(403, "Forbidden", "no")).kind(), ErrorKind::Forbidden);
        assert_eq!(w(api(500, "InternalError", "x")).kind(), ErrorKind::Api);
        let terminating = api(
            403,
            "Forbidden",
            "unable to create new content in namespace op because it is being terminated",
        );
        assert_eq!(w(terminating).kind(), ErrorKind::NamespaceTerminating);
        assert!(
            w(api(409, "Conflict", "stale"))
                .to_string()
                .starts_with("status failed: ")
        );
    }
}
