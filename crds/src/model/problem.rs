//! Problems the model finds, per object: what becomes each object's `Ready` condition.

use foldhash::HashMap;
use std::sync::Arc;

/// The four kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// ApiProxy.
    ApiProxy,
    /// AuthPolicy.
    AuthPolicy,
    /// Credential.
    Credential,
    /// Role.
    Role,
}

impl Kind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ApiProxy => "ApiProxy",
            Kind::AuthPolicy => "AuthPolicy",
            Kind::Credential => "Credential",
            Kind::Role => "Role",
        }
    }
}

/// Identity of one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: Arc<str>,
    /// Its name.
    pub name: Arc<str>,
}

impl ObjectRef {
    /// A reference to an object.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: Arc::from(namespace),
            name: Arc::from(name),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// Why an object is not (fully) served. The names are the `reason` of its `Ready` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A field is invalid; the object serves nothing.
    Invalid,
    /// Another object of the same kind, namespace and name was given (a folder of manifests).
    Duplicate,
    /// The referenced AuthPolicy does not exist.
    PolicyNotFound,
    /// The referenced AuthPolicy has the other management mode.
    PolicyModeMismatch,
    /// A referenced ApiProxy does not exist (the others are still granted).
    ProxyNotFound,
    /// A referenced Role does not exist (the others are still granted).
    RoleNotFound,
    /// A referenced Secret does not exist.
    SecretNotFound,
    /// The referenced Secret lacks the key.
    SecretKeyNotFound,
    /// The secret is to be generated and has not been yet.
    SecretPending,
    /// The client_id is to be generated and has not been yet.
    ClientIdPending,
    /// Another, older object claims the same client_id.
    ClientIdConflict,
    /// Another, older ApiProxy claims the same audience.
    AudienceConflict,
    /// Entries of the password-grant user pool are not argon2id hashes.
    UserPoolInvalid,
    /// The Credential's `expiresAt` has passed.
    Expired,
    /// The Credential is disabled.
    Disabled,
    /// A Secret with the name the operator generates into exists and is not the operator's; it
    /// is never overwritten.
    SecretConflict,
    /// The ServiceAccount a Credential binds does not exist (the operator watches them).
    ServiceAccountNotFound,
}

impl Reason {
    /// The condition reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Invalid => "Invalid",
            Reason::Duplicate => "Duplicate",
            Reason::PolicyNotFound => "PolicyNotFound",
            Reason::PolicyModeMismatch => "PolicyModeMismatch",
            Reason::ProxyNotFound => "ProxyNotFound",
            Reason::RoleNotFound => "RoleNotFound",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretKeyNotFound => "SecretKeyNotFound",
            Reason::SecretPending => "SecretPending",
            Reason::ClientIdPending => "ClientIdPending",
            Reason::ClientIdConflict => "ClientIdConflict",
            Reason::AudienceConflict => "AudienceConflict",
            Reason::UserPoolInvalid => "UserPoolInvalid",
            Reason::Expired => "Expired",
            Reason::Disabled => "Disabled",
            Reason::SecretConflict => "SecretConflict",
            Reason::ServiceAccountNotFound => "ServiceAccountNotFound",
        }
    }
}

/// One problem with one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The reason.
    pub reason: Reason,
    /// The field at fault, e.g. `spec.policyRef.name`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.field,
            self.reason.as_str(),
            self.message
        )
    }
}

/// The objects that are not fully served, with their problems. Objects without problems are not
/// listed: they are Ready. A hash map, since the model adds to it while resolving 100,000s of
/// objects and listing in order is rare (readiness details, status writes) and sorts then.
#[derive(Clone, Debug, Default)]
pub struct Report {
    objects: HashMap<ObjectRef, Vec<Problem>>,
}

impl Report {
    pub(crate) fn add(
        &mut self,
        obj: &ObjectRef,
        reason: Reason,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let p = Problem {
            reason,
            field: field.into(),
            message: message.into(),
        };
        match self.objects.get_mut(obj) {
            Some(list) => list.push(p),
            None => {
                self.objects.insert(obj.clone(), vec![p]);
            }
        }
    }

    /// The problems of one object; empty when it is fully served (or was never seen).
    pub fn problems(&self, obj: &ObjectRef) -> &[Problem] {
        self.objects.get(obj).map(Vec::as_slice).unwrap_or_default()
    }

    /// Objects with at least one problem, in kind/namespace/name order.
    pub fn with_problems(&self) -> Vec<(&ObjectRef, &[Problem])> {
        let mut v: Vec<_> = self
            .objects
            .iter()
            .map(|(k, p)| (k, p.as_slice()))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// How many objects have problems.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True if every object is fully served.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}
