//! Request ids: the caller's `X-Request-Id` when it is a sane token, else the trace id of a W3C
//! `traceparent`, else one made here. Echoed in `X-Request-Id` on every OAuth response, and
//! carried by audit events and log lines, so one id follows a request through the gateway, the
//! token server and the collector.

use axum::http::HeaderMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A request's id, put in its extensions by the handler before the request is read.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

/// The id of `req`, kept in its extensions so the request reader and the response agree.
pub fn tag(req: &mut axum::extract::Request) -> Arc<str> {
    let id = of(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    id
}

/// The longest caller-chosen id kept; longer ones are replaced, not clipped.
pub const MAX_LEN: usize = 128;

/// The request id of a request with `headers`.
pub fn of(headers: &HeaderMap) -> Arc<str> {
    if let Some(id) = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
    {
        return Arc::from(id);
    }
    if let Some(trace) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id)
    {
        return Arc::from(trace);
    }
    generated()
}

/// 1 to [`MAX_LEN`] characters from a set that cannot break a log line, a JSON string or a
/// header: letters, digits and `-._:/+=@`.
fn sane(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/+=@".contains(&b))
}

/// The trace id of a version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if valid and
/// not all zeros.
fn trace_id(v: &str) -> Option<&str> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    (version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0'))
    .then_some(trace)
}

/// A process-unique id: a random prefix chosen at start and a counter (no randomness per
/// request: the id only has to be unique, not secret).
fn generated() -> Arc<str> {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut b = [0u8; 6];
        // A failing system RNG leaves a fixed prefix: ids stay unique within the process.
        let _ = aws_lc_rs::rand::fill(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    });
    Arc::from(format!("{prefix}-{:x}", N.fetch_add(1, Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn a_sane_caller_id_is_kept_and_anything_else_replaced() {
        assert_eq!(
            &*of(&headers(&[("x-request-id", "gw-42:abc")])),
            "gw-42:abc"
        );
        for bad in ["a b", "\"quoted\"", "x\\y", "{json}", &"a".repeat(129)] {
            let id = of(&headers(&[("x-request-id", bad)]));
            assert_ne!(&*id, bad);
            assert!(sane(&id), "{id}");
        }
    }

    #[test]
    fn a_traceparent_gives_its_trace_id() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            &*of(&headers(&[("traceparent", tp)])),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // X-Request-Id wins; malformed or all-zero trace ids are not used.
        assert_eq!(
            &*of(&headers(&[("traceparent", tp), ("x-request-id", "r1")])),
            "r1"
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f35-00f067aa0ba902b7-01",
        ] {
            let id = of(&headers(&[("traceparent", bad)]));
            assert!(!bad.contains(&*id), "{bad} gave {id}");
        }
    }

    #[test]
    fn generated_ids_are_unique() {
        let a = of(&HeaderMap::new());
        let b = of(&HeaderMap::new());
        assert_ne!(a, b);
        assert!(sane(&a) && sane(&b));
    }
}
