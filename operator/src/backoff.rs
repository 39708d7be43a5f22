//! Failed writes back off per object, and a terminating namespace is left alone.
//!
//! Issue 20: when a namespace holding 10,000 Credentials was deleted, the namespace controller
//! removed their generated Secrets and every pass (about every 2.5 s) tried to re-create all of
//! them, 26,422 refused writes in 40 s. Now an object whose write failed waits before its next
//! try (exponentially, capped), and a namespace that refused a write because it is being
//! terminated gets no writes at all for a while. Pure: the caller passes the clock.

use jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;

/// The first retry waits this long after a failure; each further failure doubles it.
const BASE: SignedDuration = SignedDuration::from_secs(1);
/// The longest wait between two tries of one object.
const CAP: SignedDuration = SignedDuration::from_secs(300);
/// How long a namespace that said it is terminating gets no writes.
const TERMINATING: SignedDuration = SignedDuration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    until: Timestamp,
}

/// Per-object backoff of failed writes, and terminating namespaces.
#[derive(Debug, Default)]
pub struct Backoff {
    objects: HashMap<String, Entry>,
    namespaces: HashMap<String, Timestamp>,
}

/// Why an object is not written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferred {
    /// Its last write failed; try again at this time.
    Backoff(Timestamp),
    /// Its namespace is being deleted; look again at this time.
    Terminating(Timestamp),
}

impl Deferred {
    /// When to look again.
    pub fn until(self) -> Timestamp {
        match self {
            Deferred::Backoff(t) | Deferred::Terminating(t) => t,
        }
    }
}

impl Backoff {
    /// Whether `object` (in `namespace`) may be written at `now`.
    pub fn check(&self, namespace: &str, object: &str, now: Timestamp) -> Result<(), Deferred> {
        if let Some(t) = self.namespaces.get(namespace).filter(|t| **t > now) {
            return Err(Deferred::Terminating(*t));
        }
        match self.objects.get(object) {
            Some(e) if e.until > now => Err(Deferred::Backoff(e.until)),
            _ => Ok(()),
        }
    }

    /// Records a failed write of `object`; returns when it may be tried again.
    pub fn failed(&mut self, object: &str, now: Timestamp) -> Timestamp {
        let failures = self.objects.get(object).map_or(0, |e| e.failures) + 1;
        let wait = BASE
            .checked_mul(1 << (failures - 1).min(16))
            .unwrap_or(CAP)
            .min(CAP);
        let until = now.checked_add(wait).unwrap_or(now);
        self.objects
            .insert(object.to_owned(), Entry { failures, until });
        until
    }

    /// Records a successful write of `object`: its next failure starts from the base again.
    pub fn succeeded(&mut self, object: &str) {
        self.objects.remove(object);
    }

    /// Records that `namespace` refused a write because it is being terminated.
    pub fn terminating(&mut self, namespace: &str, now: Timestamp) -> Timestamp {
        let until = now.checked_add(TERMINATING).unwrap_or(now);
        self.namespaces.insert(namespace.to_owned(), until);
        until
    }

    /// Forgets objects that no longer exist and namespaces whose pause is over, so the maps
    /// stay bounded by the world.
    pub fn retain(&mut self, exists: impl Fn(&str) -> bool, now: Timestamp) {
        self.objects.retain(|k, _| exists(k));
        self.namespaces.retain(|_, t| *t > now);
    }
}

/// True when the API server refused a write because the namespace is being deleted
/// ("unable to create new content in namespace X because it is being terminated", 403, cause
/// `NamespaceTerminating`).
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("because it is being terminated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("ts")
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap_and_success_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.check("ns", "ns/a", t(0)), Ok(()));
        assert_eq!(b.failed("ns/a", t(0)), t(1));
        assert_eq!(b.check("ns", "ns/a", t(0)), Err(Deferred::Backoff(t(1))));
        assert_eq!(
            b.check("ns", "ns/b", t(0)),
            Ok(()),
            "only that object waits"
        );
        assert_eq!(b.check("ns", "ns/a", t(1)), Ok(()));
        assert_eq!(b.failed("ns/a", t(1)), t(3));
        assert_eq!(b.failed("ns/a", t(3)), t(7));
        let mut now = t(7);
        for _ in 0..20 {
            now = b.failed("ns/a", now);
        }
        let next = b.failed("ns/a", now);
        assert_eq!(next.duration_since(now), CAP, "capped");
        b.succeeded("ns/a");
        assert_eq!(b.failed("ns/a", now), now.checked_add(BASE).expect("ts"));
    }

    #[test]
    fn a_terminating_namespace_gets_no_writes_until_its_pause_ends() {
        let mut b = Backoff::default();
        let until = b.terminating("gone", t(0));
        assert_eq!(
            b.check("gone", "gone/a", t(5)),
            Err(Deferred::Terminating(until))
        );
        assert_eq!(b.check("other", "other/a", t(5)), Ok(()));
        assert_eq!(b.check("gone", "gone/a", until), Ok(()));
    }

    #[test]
    fn retain_forgets_deleted_objects_and_ended_pauses() {
        let mut b = Backoff::default();
        b.failed("ns/a", t(0));
        b.failed("ns/b", t(0));
        b.terminating("gone", t(0));
        b.retain(|k| k == "ns/a", t(31));
        assert!(b.objects.contains_key("ns/a") && !b.objects.contains_key("ns/b"));
        assert!(b.namespaces.is_empty());
    }
}
