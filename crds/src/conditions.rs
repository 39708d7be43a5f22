//! The `Ready` condition from an object's problems, merged with the previous conditions so that
//! `lastTransitionTime` only moves when the status does (no hot loops, honest ages).

use crate::common::READY;
use crate::model::Problem;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Longest condition message (the API server allows 32768 bytes).
pub const MAX_MESSAGE: usize = 4096;

/// The `Ready` condition for an object with these problems.
pub fn ready(problems: &[Problem], observed_generation: Option<i64>, now: Time) -> Condition {
    let (status, reason, message) = match problems {
        [] => ("True", "Resolved", "served by the token server".to_owned()),
        [first, ..] => {
            let all: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect();
            ("False", first.reason.as_str(), all.join("; "))
        }
    };
    Condition {
        type_: READY.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: truncate(message),
        observed_generation,
        last_transition_time: now,
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Sets `new` in `conditions`, keeping the old `lastTransitionTime` when the status is unchanged.
/// Returns true if anything changed (the caller writes status only then).
pub fn merge(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != new;
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Reason;

    fn t(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).expect("valid"))
    }

    fn problem(reason: Reason) -> Problem {
        Problem {
            reason,
            field: "spec.policyRef.name".into(),
            message: "AuthPolicy p was not found".into(),
        }
    }

    #[test]
    fn ready_true_without_problems_and_false_with_the_first_reason() {
        let ok = ready(&[], Some(3), t(10));
        assert_eq!(
            (
                ok.status.as_str(),
                ok.reason.as_str(),
                ok.observed_generation
            ),
            ("True", "Resolved", Some(3))
        );
        let bad = ready(
            &[
                problem(Reason::PolicyNotFound),
                problem(Reason::RoleNotFound),
            ],
            Some(3),
            t(10),
        );
        assert_eq!(
            (bad.status.as_str(), bad.reason.as_str()),
            ("False", "PolicyNotFound")
        );
        assert!(
            bad.message
                .contains("spec.policyRef.name: AuthPolicy p was not found; spec.policyRef.name")
        );
    }

    #[test]
    fn merge_keeps_transition_time_while_status_is_unchanged() {
        let mut conds = Vec::new();
        assert!(merge(&mut conds, ready(&[], Some(1), t(10))));
        assert!(
            !merge(&mut conds, ready(&[], Some(1), t(20))),
            "same status, same generation: no write"
        );
        assert_eq!(conds[0].last_transition_time, t(10));
        assert!(
            merge(&mut conds, ready(&[], Some(2), t(30))),
            "new generation is a change"
        );
        assert_eq!(conds[0].last_transition_time, t(10));
        assert!(merge(
            &mut conds,
            ready(&[problem(Reason::PolicyNotFound)], Some(2), t(40))
        ));
        assert_eq!(conds[0].last_transition_time, t(40));
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let p = Problem {
            reason: Reason::Invalid,
            field: "f".into(),
            message: "é".repeat(5000),
        };
        let c = ready(&[p], None, t(0));
        assert!(c.message.len() <= MAX_MESSAGE);
        assert!(c.message.ends_with('…'));
    }
}
