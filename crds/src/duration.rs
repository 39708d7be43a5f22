//! Durations as the resources spell them: Go / Kubernetes style `1h30m`, `15m`, `90s`.
//!
//! Only `h`, `m` and `s` in that order are accepted, because the API server checks the cross-field
//! rules with CEL's `duration()`, which does not know days; one syntax for both keeps the schema
//! and the Rust validation in agreement.

use std::time::Duration;

/// The schema pattern for a duration field; the Rust parser below accepts exactly this language.
pub const DURATION_PATTERN: &str = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$";

/// The longest duration any field accepts (10 years), so arithmetic on timestamps cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration: write e.g. `15m`, `1h` or `1h30m`")]
    Empty,
    /// The string is not of the `1h30m15s` form.
    #[error(
        "`{0}` is not a duration: write hours, minutes and seconds in that order, e.g. `1h30m`, `15m`, `90s`"
    )]
    Syntax(String),
    /// Zero length.
    #[error("`{0}` is zero: a duration must be at least 1s")]
    Zero(String),
    /// Longer than [`MAX_DURATION`].
    #[error("`{0}` is longer than the maximum of 87600h (10 years)")]
    TooLong(String),
}

/// Parses `1h30m`-style durations into a [`Duration`] of whole seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let syntax = || DurationError::Syntax(s.chars().take(64).collect());
    let mut total: u64 = 0;
    let mut rest = s;
    // Each unit may appear once and only after the larger ones.
    for (unit, secs) in [('h', 3600u64), ('m', 60), ('s', 1)] {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !rest[digits..].starts_with(unit) {
            continue;
        }
        if digits > 12 {
            return Err(DurationError::TooLong(s.to_owned()));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| syntax())?;
        total = total.saturating_add(n.saturating_mul(secs));
        rest = &rest[digits + 1..];
    }
    if !rest.is_empty() {
        return Err(syntax());
    }
    if total == 0 {
        return Err(DurationError::Zero(s.to_owned()));
    }
    let d = Duration::from_secs(total);
    if d > MAX_DURATION {
        return Err(DurationError::TooLong(s.to_owned()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2h0m5s"), Ok(Duration::from_secs(7205)));
    }

    #[test]
    fn rejects_everything_else_with_the_fix() {
        for bad in [
            "1d", "30", "m", "1m1h", "1h 30m", "-5s", "1.5h", "1hh", "5S", "1h30mx",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(matches!(err, DurationError::Syntax(_)), "{bad}: {err:?}");
            assert!(err.to_string().contains("e.g."), "{err}");
        }
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(parse_duration("0s"), Err(DurationError::Zero(_))));
        assert!(matches!(
            parse_duration("87601h"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            parse_duration("9999999999999h"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn pattern_and_parser_agree_on_samples() {
        // The schema pattern is anchored to the same order of units the parser walks.
        assert_eq!(DURATION_PATTERN, r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$");
    }
}
