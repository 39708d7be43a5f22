//! Token-request limits per client: a rate (GCRA, the token bucket as one timestamp per client)
//! and a quota per UTC day. Pure arithmetic on an injected clock; the in-process table and the
//! Redis script (`attempt.lua`) apply the same rules.

use tessera_crds::model::Limits;

/// Why a request is over its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Faster than `rateLimit` allows.
    Rate,
    /// The day's `quota` is used up.
    Quota,
}

impl Over {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Over::Rate => "rate",
            Over::Quota => "quota",
        }
    }
}

/// A request over its limits: answered 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until a request would be admitted, at least 1.
    pub retry_after: u64,
    /// Which limit.
    pub over: Over,
}

/// What is left after an admitted request (for the `RateLimit` header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining {
    /// Requests that could be made at once now, with a rate limit.
    pub rate: Option<u64>,
    /// Requests left today, with a quota.
    pub quota: Option<u64>,
    /// Seconds until the quota resets (midnight UTC).
    pub quota_reset: u64,
}

/// One client's state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct State {
    /// GCRA's theoretical arrival time, ms since the epoch.
    pub tat_ms: f64,
    /// The UTC day `used` counts, days since the epoch.
    pub day: i64,
    /// Requests admitted that day.
    pub used: u64,
}

/// Seconds from `now_ms` to the next midnight UTC.
pub fn secs_to_midnight(now_ms: i64) -> u64 {
    let s = now_ms.div_euclid(1000);
    (86_400 - s.rem_euclid(86_400)) as u64
}

/// Admits one request at `now_ms` or says why not; updates `st` only when admitted.
pub fn admit(st: &mut State, limits: &Limits, now_ms: i64) -> Result<Remaining, Limited> {
    let now = now_ms as f64;
    let day = now_ms.div_euclid(86_400_000);
    let used = if st.day == day { st.used } else { 0 };
    let mut out = Remaining {
        quota_reset: secs_to_midnight(now_ms),
        ..Remaining::default()
    };
    if let Some(q) = limits.per_day {
        if used >= q {
            return Err(Limited {
                retry_after: out.quota_reset.max(1),
                over: Over::Quota,
            });
        }
        out.quota = Some(q - used - 1);
    }
    let mut tat = st.tat_ms;
    if let Some((rps, burst)) = limits.rate {
        let interval = 1000.0 / f64::from(rps.max(1));
        let tolerance = interval * f64::from(burst.max(1));
        let start = tat.max(now);
        let next = start + interval;
        let allow_at = next - tolerance;
        if now < allow_at {
            return Err(Limited {
                retry_after: (((allow_at - now) / 1000.0).ceil() as u64).max(1),
                over: Over::Rate,
            });
        }
        out.rate = Some(((now + tolerance - next) / interval).floor().max(0.0) as u64);
        tat = next;
    }
    st.tat_ms = tat;
    st.day = day;
    st.used = used + 1;
    Ok(out)
}

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): the limits in force.
pub fn policy_header(limits: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some((rps, burst)) = limits.rate {
        parts.push(format!(
            "\"burst\";q={burst};w={}",
            burst.div_ceil(rps.max(1))
        ));
    }
    if let Some(q) = limits.per_day {
        parts.push(format!("\"day\";q={q};w=86400"));
    }
    parts.join(", ")
}

/// `RateLimit`: what is left of each limit, and when it resets.
pub fn remaining_header(limits: &Limits, r: &Remaining) -> String {
    let mut parts = Vec::new();
    if let (Some((rps, _)), Some(left)) = (limits.rate, r.rate) {
        // A full request refills in 1/rps s: say 1 s when nothing is left, else 0.
        let t = u64::from(left == 0 && rps > 0);
        parts.push(format!("\"burst\";r={left};t={t}"));
    }
    if let Some(left) = r.quota {
        parts.push(format!("\"day\";r={left};t={}", r.quota_reset));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn limits(rate: Option<(u32, u32)>, per_day: Option<u64>) -> Limits {
        Limits { rate, per_day }
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = limits(Some((10, 5)), None);
        let mut st = State::default();
        let t0 = 1_800_000_000_000;
        for i in 0..5 {
            let r = admit(&mut st, &l, t0).expect("within the burst");
            assert_eq!(r.rate, Some(4 - i));
        }
        let over = admit(&mut st, &l, t0).expect_err("burst spent");
        assert_eq!((over.over, over.retry_after), (Over::Rate, 1));
        // 100 ms later one more request has refilled, exactly one.
        admit(&mut st, &l, t0 + 100).expect("refilled");
        assert!(admit(&mut st, &l, t0 + 100).is_err());
        // A refused request costs nothing: after 500 ms idle the burst is back.
        let mut n = 0;
        while admit(&mut st, &l, t0 + 600).is_ok() {
            n += 1;
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn the_quota_counts_per_utc_day_and_resets_at_midnight() {
        let l = limits(None, Some(3));
        let mut st = State::default();
        let noon = 20_000 * DAY + DAY / 2;
        for left in [2, 1, 0] {
            assert_eq!(admit(&mut st, &l, noon).expect("quota").quota, Some(left));
        }
        let over = admit(&mut st, &l, noon).expect_err("used up");
        assert_eq!((over.over, over.retry_after), (Over::Quota, 43_200));
        assert!(admit(&mut st, &l, noon + DAY / 2 - 1).is_err());
        assert_eq!(
            admit(&mut st, &l, noon + DAY / 2).expect("new day").quota,
            Some(2)
        );
    }

    #[test]
    fn a_request_over_quota_does_not_spend_the_rate_and_vice_versa() {
        let l = limits(Some((1, 1)), Some(1));
        let mut st = State::default();
        let t = 20_000 * DAY;
        admit(&mut st, &l, t).expect("first");
        let before = st;
        assert_eq!(admit(&mut st, &l, t).expect_err("quota").over, Over::Quota);
        assert_eq!(st, before, "nothing recorded for a refusal");
    }

    #[test]
    fn headers_name_each_limit() {
        let l = limits(Some((50, 100)), Some(100_000));
        assert_eq!(
            policy_header(&l),
            "\"burst\";q=100;w=2, \"day\";q=100000;w=86400"
        );
        let r = Remaining {
            rate: Some(0),
            quota: Some(7),
            quota_reset: 60,
        };
        assert_eq!(
            remaining_header(&l, &r),
            "\"burst\";r=0;t=1, \"day\";r=7;t=60"
        );
        assert_eq!(policy_header(&Limits::default()), "");
    }
}
