//! The key set's life: generated on first start, rotated on an interval, old keys retired once
//! nothing they signed can still be valid. Pure: stored bytes, clock and policy in, a decision out.
//!
//! The timeline of one signing algorithm with interval `I`, pre-publication `P` and retirement
//! delay `R` (the longest access-token lifetime plus clock skew):
//!
//! ```text
//! t0            key A signs
//! t0+I-P        key B is added: published in the JWKS, not signing (validators fetch it)
//! t0+I          key B signs; A stays published (A.retireAfter = t0+I+R)
//! t0+I+R        A leaves the JWKS: every token it signed has expired
//! ```
//!
//! Encryption keys (opaque and refresh tokens) rotate on the same interval; the newest seals and
//! older ones keep opening until the longest sealed-token lifetime has passed.

use super::{Write, own_secret, read_secret_value};
use crate::error::Error;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use std::time::Duration;
use tessera_crds::auth_policy::SigningAlgorithm;
use tessera_crds::duration::parse_duration;
use tessera_crds::model::ResourceSet;
use tessera_crds::validate::{DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL};
use tessera_keys::{KeySet, KeySetFile, SECRET_DATA_KEY};

/// Rotation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Rotate every interval; `None` never rotates (keys only retire).
    pub rotation_interval: Option<Duration>,
    /// How long a new signing key is published before it signs.
    pub prepublish: Duration,
    /// How long a superseded signing key stays published after its successor starts signing.
    pub retire_delay: Duration,
    /// How long a superseded encryption key keeps opening tokens.
    pub sealed_lifetime: Duration,
}

impl KeyPolicy {
    /// The policy for the AuthPolicies in force: a superseded key stays as long as the longest
    /// lifetime of anything it vouches for (access tokens it signed; opaque and refresh tokens
    /// it sealed), plus the clock skew allowed between token servers and validators.
    pub fn for_policies(
        set: &ResourceSet,
        rotation_interval: Option<Duration>,
        prepublish: Duration,
        skew: Duration,
    ) -> Self {
        let ttl = |s: Option<&str>, d| s.and_then(|s| parse_duration(s).ok()).unwrap_or(d);
        let mut access = DEFAULT_ACCESS_TTL;
        let mut sealed = DEFAULT_ACCESS_TTL;
        for p in &set.auth_policies {
            if !p.spec.access_token.immortal {
                let a = ttl(p.spec.access_token.ttl.as_deref(), DEFAULT_ACCESS_TTL);
                access = access.max(a);
                sealed = sealed.max(a);
            }
            if p.spec.refresh.enabled {
                sealed = sealed.max(ttl(p.spec.refresh.ttl.as_deref(), DEFAULT_REFRESH_TTL));
            }
        }
        KeyPolicy {
            rotation_interval,
            prepublish,
            retire_delay: access + skew,
            sealed_lifetime: sealed + skew,
        }
    }
}

/// What is stored now.
#[derive(Debug, Clone, Copy)]
pub enum Stored<'a> {
    /// No keys Secret.
    Absent,
    /// The Secret exists; its `keyset.json` value, if it has one.
    Present(Option<&'a [u8]>),
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyDecision {
    /// Create the Secret with this set.
    Create(KeySetFile),
    /// Replace the set (guarded by the Secret's resourceVersion), for these reasons.
    Update(KeySetFile, Vec<String>),
    /// Nothing to do.
    Keep,
    /// The stored set is unreadable: report it and change nothing (it may hold keys that signed
    /// live tokens; replacing it would invalidate them).
    Blocked(String),
}

/// A decision and when the clock alone will next change it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPlan {
    /// The decision.
    pub decision: KeyDecision,
    /// When to look again.
    pub next_wake: Option<Timestamp>,
    /// The set in effect after the decision (for the verifier key and metrics).
    pub effective: Option<KeySetFile>,
}

const ALGORITHMS: [SigningAlgorithm; 3] = [
    SigningAlgorithm::RS256,
    SigningAlgorithm::ES256,
    SigningAlgorithm::EdDSA,
];

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

/// Decides. `fresh` generates a new key set (its keys are taken as needed).
pub fn plan_keys(
    stored: Stored<'_>,
    now: Timestamp,
    policy: &KeyPolicy,
    fresh: &mut dyn FnMut(Timestamp) -> Option<KeySetFile>,
) -> KeyPlan {
    let blocked = |why: String| KeyPlan {
        decision: KeyDecision::Blocked(why),
        next_wake: None,
        effective: None,
    };
    let current = match stored {
        Stored::Absent => {
            return match fresh(now) {
                Some(file) => KeyPlan {
                    next_wake: policy
                        .rotation_interval
                        .map(|i| add(now, i.saturating_sub(policy.prepublish))),
                    effective: Some(file.clone()),
                    decision: KeyDecision::Create(file),
                },
                None => blocked("generating keys failed".into()),
            };
        }
        Stored::Present(None) => {
            return blocked(format!(
                "the keys Secret has no `{}` key; restore it from a backup, or delete the Secret to have a new key set generated (tokens signed by the old keys stop verifying)",
                tessera_keys::SECRET_DATA_KEY
            ));
        }
        Stored::Present(Some(bytes)) => match KeySetFile::from_json(bytes) {
            Ok(f) => match KeySet::from_file(&f) {
                Ok(_) => f,
                Err(e) => {
                    return blocked(format!(
                        "the stored key set is invalid ({e}); fix it, or delete the Secret to have a new one generated"
                    ));
                }
            },
            Err(e) => {
                return blocked(format!(
                    "the stored key set is unreadable ({e}); fix it, or delete the Secret to have a new one generated"
                ));
            }
        },
    };

    let mut file = current.clone();
    let mut changes = Vec::new();
    let mut wake: Option<Timestamp> = None;
    let mut wake_at = |t: Timestamp| {
        if t > now {
            wake = Some(wake.map_or(t, |w: Timestamp| w.min(t)));
        }
    };
    let mut generated: Option<KeySetFile> = None;
    let mut take_fresh = |now: Timestamp| -> Option<KeySetFile> {
        if generated.is_none() {
            generated = fresh(now);
        }
        generated.clone()
    };

    for alg in ALGORITHMS {
        let newest = file
            .signing
            .iter()
            .filter(|k| k.alg == alg)
            .map(|k| k.active_from)
            .max();
        let new_from = match newest {
            // An algorithm with no key gets one at once: nothing signed with it can be cached.
            None => Some(now),
            Some(from) if from <= now => policy.rotation_interval.and_then(|i| {
                let due = sub(add(from, i), policy.prepublish).max(from);
                if now >= due {
                    Some(add(now, policy.prepublish))
                } else {
                    wake_at(due);
                    None
                }
            }),
            // A successor is already published and waiting.
            Some(_) => None,
        };
        if let Some(active_from) = new_from {
            let Some(f) = take_fresh(now) else {
                return blocked("generating keys failed".into());
            };
            if let Some(mut k) = f.signing.into_iter().find(|k| k.alg == alg) {
                k.active_from = active_from;
                k.retire_after = None;
                k.published_from = Some(now);
                changes.push(format!(
                    "added {} key {} signing from {active_from}",
                    alg.as_str(),
                    k.kid
                ));
                file.signing.push(k);
            }
        }
        // Every key with a successor retires once the successor has signed for `retire_delay`.
        let actives: Vec<Timestamp> = file
            .signing
            .iter()
            .filter(|k| k.alg == alg)
            .map(|k| k.active_from)
            .collect();
        for k in file.signing.iter_mut().filter(|k| k.alg == alg) {
            let successor = actives.iter().copied().filter(|t| *t > k.active_from).min();
            if let (Some(s), None) = (successor, k.retire_after) {
                let at = add(s, policy.retire_delay);
                changes.push(format!("{} retires at {at}", k.kid));
                k.retire_after = Some(at);
            }
        }
    }
    let before = file.signing.len();
    file.signing
        .retain(|k| k.retire_after.is_none_or(|t| t > now));
    if file.signing.len() != before {
        changes.push(format!(
            "removed {} retired signing key(s)",
            before - file.signing.len()
        ));
    }
    for k in &file.signing {
        wake_at(k.active_from);
        if let Some(t) = k.retire_after {
            wake_at(t);
        }
    }

    // Encryption keys: the newest seals at once (sealed tokens are never validated elsewhere).
    if let Some(newest) = file.encryption.iter().map(|k| k.created_at).max()
        && let Some(i) = policy.rotation_interval
    {
        let due = add(newest, i);
        if now >= due {
            let Some(f) = take_fresh(now) else {
                return blocked("generating keys failed".into());
            };
            if let Some(mut k) = f.encryption.into_iter().next() {
                k.created_at = now;
                changes.push(format!("added encryption key {}", k.kid));
                file.encryption.push(k);
            }
        } else {
            wake_at(due);
        }
    }
    let created: Vec<Timestamp> = file.encryption.iter().map(|k| k.created_at).collect();
    let before = file.encryption.len();
    file.encryption.retain(|k| {
        let successor = created.iter().copied().filter(|t| *t > k.created_at).min();
        successor.is_none_or(|s| add(s, policy.sealed_lifetime) > now)
    });
    if file.encryption.len() != before {
        changes.push(format!(
            "removed {} expired encryption key(s)",
            before - file.encryption.len()
        ));
    }
    for k in &file.encryption {
        if let Some(s) = created.iter().copied().filter(|t| *t > k.created_at).min() {
            wake_at(add(s, policy.sealed_lifetime));
        }
    }

    let decision = if changes.is_empty() {
        KeyDecision::Keep
    } else {
        KeyDecision::Update(file.clone(), changes)
    };
    KeyPlan {
        decision,
        next_wake: wake,
        effective: Some(file),
    }
}

impl<'a> Stored<'a> {
    /// What the keys Secret `stored` (if any) holds; `value` is its `keyset.json` as read.
    pub fn of(stored: Option<&Secret>, value: &'a Option<Vec<u8>>) -> Self {
        match stored {
            None => Stored::Absent,
            Some(_) => Stored::Present(value.as_deref()),
        }
    }
}

/// The `keyset.json` value of a stored keys Secret.
pub fn stored_value(stored: Option<&Secret>) -> Option<Vec<u8>> {
    stored.and_then(|s| read_secret_value(s, SECRET_DATA_KEY))
}

/// The write a decision takes against the keys Secret `stored` (`None` to keep it), or why the
/// stored set blocks any.
pub fn key_set_write(
    decision: &KeyDecision,
    namespace: &str,
    name: &str,
    stored: Option<&Secret>,
) -> Result<Option<Write>, Error> {
    let encode = |file: &KeySetFile| {
        serde_json::to_vec_pretty(file).map_err(|source| Error::Encode {
            what: "the key set",
            source,
        })
    };
    Ok(match decision {
        KeyDecision::Blocked(why) => return Err(Error::KeySetBlocked(why.clone())),
        KeyDecision::Keep => None,
        KeyDecision::Create(file) => Some(own_secret(
            namespace,
            name,
            SECRET_DATA_KEY,
            encode(file)?,
            None,
        )),
        // Replace guarded by resourceVersion: of two writers, the second gets a conflict and
        // re-plans from what the first wrote, so no two keys are minted.
        KeyDecision::Update(file, _) => Some(own_secret(
            namespace,
            name,
            SECRET_DATA_KEY,
            encode(file)?,
            stored,
        )),
    })
}

/// Age of the key signing for each algorithm at `now` (for metrics).
pub fn signer_ages(file: &KeySetFile, now: Timestamp) -> Vec<(SigningAlgorithm, f64)> {
    ALGORITHMS
        .iter()
        .filter_map(|alg| {
            let from = file
                .signing
                .iter()
                .filter(|k| {
                    k.alg == *alg && k.active_from <= now && k.retire_after.is_none_or(|t| t > now)
                })
                .map(|k| k.active_from)
                .max()?;
            Some((*alg, now.duration_since(from).as_secs_f64()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("ts")
    }

    fn policy() -> KeyPolicy {
        KeyPolicy {
            rotation_interval: Some(Duration::from_secs(24 * H)),
            prepublish: Duration::from_secs(1800),
            retire_delay: Duration::from_secs(H + 300),
            sealed_lifetime: Duration::from_secs(8 * H + 300),
        }
    }

    fn gen_fn() -> impl FnMut(Timestamp) -> Option<KeySetFile> {
        |now| KeySet::generate_file(now).ok()
    }

    /// Applies a decision as the operator would (the stored bytes become the new set).
    fn step(stored: &mut Option<Vec<u8>>, now: Timestamp, p: &KeyPolicy) -> KeyPlan {
        let plan = plan_keys(
            match stored {
                None => Stored::Absent,
                Some(b) => Stored::Present(Some(b)),
            },
            now,
            p,
            &mut gen_fn(),
        );
        match &plan.decision {
            KeyDecision::Create(f) | KeyDecision::Update(f, _) => {
                *stored = Some(serde_json::to_vec(f).expect("json"));
            }
            _ => {}
        }
        plan
    }

    fn set(stored: &Option<Vec<u8>>) -> KeySet {
        KeySet::from_json(stored.as_deref().expect("stored")).expect("valid set")
    }

    #[test]
    fn full_rotation_timeline_publishes_before_signing_and_retires_after_expiry() {
        let p = policy();
        let mut stored = None;
        let first = step(&mut stored, t(0), &p);
        assert!(matches!(first.decision, KeyDecision::Create(_)));
        let a = set(&stored)
            .signer(SigningAlgorithm::ES256, t(0))
            .expect("signer")
            .kid
            .clone();

        // Nothing to do until the pre-publication point; the plan says when to look again.
        let quiet = step(&mut stored, t(10), &p);
        assert_eq!(quiet.decision, KeyDecision::Keep);
        assert_eq!(quiet.next_wake, Some(t(24 * H as i64 - 1800)));

        // At interval - prepublish: B is published, A still signs.
        let pre = t(24 * H as i64 - 1800);
        let add = step(&mut stored, pre, &p);
        assert!(matches!(add.decision, KeyDecision::Update(..)), "{add:?}");
        let ks = set(&stored);
        assert_eq!(
            ks.signer(SigningAlgorithm::ES256, pre).expect("s").kid,
            a,
            "A signs during pre-publication"
        );
        let jwks = ks.jwks(pre).to_string();
        let b = ks
            .signer(SigningAlgorithm::ES256, t(24 * H as i64))
            .expect("b")
            .kid
            .clone();
        assert_ne!(a, b);
        assert!(
            jwks.contains(&a) && jwks.contains(&b),
            "both published before B signs"
        );
        // A validator that fetched the JWKS now can verify everything signed in the next 30 min.
        assert!(step(&mut stored, t(24 * H as i64 - 60), &p).decision == KeyDecision::Keep);

        // B signs from t0+I; A stays published for the longest token lifetime plus skew.
        let switch = t(24 * H as i64);
        let ks = set(&stored);
        assert_eq!(
            ks.signer(SigningAlgorithm::ES256, switch).expect("s").kid,
            b
        );
        let retire = t(24 * H as i64 + H as i64 + 300);
        assert!(
            ks.published(&a, t(24 * H as i64 + H as i64)).is_some(),
            "a token A signed just before the switch is still verifiable"
        );
        assert!(ks.published(&a, retire).is_none());
        // After retirement the operator drops A from the stored set.
        let cleanup = step(&mut stored, retire, &p);
        assert!(
            matches!(&cleanup.decision, KeyDecision::Update(_, c) if c.iter().any(|c| c.contains("removed"))),
            "{cleanup:?}"
        );
        assert!(!set(&stored).jwks(retire).to_string().contains(&a));
        // Exactly one key per algorithm was added per interval.
        let file: KeySetFile = serde_json::from_slice(stored.as_deref().expect("s")).expect("f");
        assert_eq!(
            file.signing
                .iter()
                .filter(|k| k.alg == SigningAlgorithm::ES256)
                .count(),
            1
        );
    }

    #[test]
    fn encryption_keys_rotate_and_old_ones_open_tokens_for_the_sealed_lifetime() {
        let p = policy();
        let mut stored = None;
        step(&mut stored, t(0), &p);
        let old = set(&stored).sealing_key().kid.clone();
        step(&mut stored, t(24 * H as i64), &p);
        let ks = set(&stored);
        assert_ne!(ks.sealing_key().kid, old, "the new key seals");
        assert!(ks.opening_key(&old).is_some(), "the old one still opens");
        step(&mut stored, t(24 * H as i64 + 8 * H as i64 + 300), &p);
        assert!(
            set(&stored).opening_key(&old).is_none(),
            "dropped after the longest sealed lifetime"
        );
    }

    #[test]
    fn without_an_interval_keys_never_rotate() {
        let p = KeyPolicy {
            rotation_interval: None,
            ..policy()
        };
        let mut stored = None;
        step(&mut stored, t(0), &p);
        assert_eq!(
            step(&mut stored, t(400 * 24 * H as i64), &p).decision,
            KeyDecision::Keep
        );
    }

    #[test]
    fn a_missing_algorithm_gets_a_key_at_once() {
        let p = policy();
        let mut f = KeySet::generate_file(t(0)).expect("gen");
        f.signing.retain(|k| k.alg != SigningAlgorithm::EdDSA);
        let bytes = serde_json::to_vec(&f).expect("json");
        let plan = plan_keys(Stored::Present(Some(&bytes)), t(5), &p, &mut gen_fn());
        let KeyDecision::Update(new, _) = plan.decision else {
            panic!("update expected")
        };
        assert!(
            new.signing
                .iter()
                .any(|k| k.alg == SigningAlgorithm::EdDSA && k.active_from == t(5))
        );
    }

    #[test]
    fn malformed_or_missing_key_sets_block_instead_of_being_replaced() {
        let p = policy();
        for bad in [
            &b"not json"[..],
            br#"{"version":1,"signing":[],"encryption":[],"verifierKey":"AA=="}"#,
            br#"{"version":2}"#,
        ] {
            let plan = plan_keys(Stored::Present(Some(bad)), t(0), &p, &mut gen_fn());
            assert!(matches!(plan.decision, KeyDecision::Blocked(_)), "{plan:?}");
        }
        let plan = plan_keys(Stored::Present(None), t(0), &p, &mut gen_fn());
        let KeyDecision::Blocked(why) = plan.decision else {
            panic!("blocked expected")
        };
        assert!(why.contains("keyset.json"), "{why}");
        // Generation failing is reported, not papered over.
        let plan = plan_keys(Stored::Absent, t(0), &p, &mut |_| None);
        assert!(matches!(plan.decision, KeyDecision::Blocked(_)));
    }

    #[test]
    fn keys_outlive_the_longest_token_they_vouch_for_plus_skew() {
        let yaml = "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {name: a}\nspec: {management: ACL, grantTypes: [client_credentials], accessToken: {ttl: 2h}, refresh: {enabled: true, ttl: 720h}}\n---\napiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {name: b}\nspec: {management: ACL, grantTypes: [client_credentials], accessToken: {immortal: true}}\n";
        let set: ResourceSet = tessera_crds::manifest::parse(yaml, "t")
            .expect("parse")
            .resources
            .into_iter()
            .collect();
        let skew = Duration::from_secs(300);
        let p = KeyPolicy::for_policies(&set, Some(Duration::from_secs(H)), Duration::ZERO, skew);
        // An immortal access token is opaque and checked by introspection: it never pins a
        // signing key, or no key could ever retire.
        assert_eq!(p.retire_delay, Duration::from_secs(2 * H) + skew);
        assert_eq!(p.sealed_lifetime, Duration::from_secs(30 * 24 * H) + skew);
        let none = KeyPolicy::for_policies(&ResourceSet::default(), None, Duration::ZERO, skew);
        assert_eq!(none.retire_delay, DEFAULT_ACCESS_TTL + skew);
        assert_eq!(none.sealed_lifetime, DEFAULT_ACCESS_TTL + skew);
    }

    #[test]
    fn a_decision_becomes_a_create_a_guarded_replace_or_nothing() {
        let file = KeySet::generate_file(t(0)).expect("generate");
        let stored = k8s_openapi::api::core::v1::Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                resource_version: Some("41".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = key_set_write(&KeyDecision::Create(file.clone()), "ns", "keys", None);
        let Ok(Some(Write::CreateSecret(s))) = created else {
            panic!("{created:?}")
        };
        assert_eq!(s.metadata.resource_version, None);
        let parsed: KeySetFile =
            serde_json::from_slice(&s.data.as_ref().expect("data")[SECRET_DATA_KEY].0)
                .expect("json");
        assert_eq!(parsed, file);
        let updated = key_set_write(
            &KeyDecision::Update(file, vec!["added".into()]),
            "ns",
            "keys",
            Some(&stored),
        );
        let Ok(Some(Write::ReplaceSecret(s))) = updated else {
            panic!("{updated:?}")
        };
        assert_eq!(s.metadata.resource_version.as_deref(), Some("41"));
        assert!(matches!(
            key_set_write(&KeyDecision::Keep, "ns", "keys", Some(&stored)),
            Ok(None)
        ));
        let blocked = key_set_write(&KeyDecision::Blocked("bad".into()), "ns", "keys", None);
        assert!(matches!(blocked, Err(Error::KeySetBlocked(w)) if w == "bad"));
    }
}
