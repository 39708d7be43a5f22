//! The OAuth 2.0 error response (RFC 6749 §5.2, RFC 8707 `invalid_target`), as a type whose
//! `IntoResponse` is pure: status, `Cache-Control: no-store`, `WWW-Authenticate` for a failed
//! client authentication and `Retry-After` for a locked client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answered to a client. Descriptions are for the client developer: they name the
/// parameter and the fix, and never echo a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// Malformed request: missing, duplicated or malformed parameter.
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// Client authentication failed. `basic` is true when the client used HTTP Basic.
    #[error("invalid_client: {description}")]
    InvalidClient {
        /// What failed, without saying whether the client exists.
        description: String,
        /// The client authenticated with HTTP Basic (answer with `WWW-Authenticate`).
        basic: bool,
    },
    /// The grant (refresh token, user credentials) is invalid, expired or revoked.
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    /// The client may not use this grant or endpoint.
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(String),
    /// The grant type is not supported.
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(String),
    /// The scope is invalid or exceeds what the client holds.
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    /// A requested resource or audience is not one the client may call (RFC 8707).
    #[error("invalid_target: {0}")]
    InvalidTarget(String),
    /// Too many failed authentications: locked until `retry_after` seconds have passed.
    #[error("too many failed authentications; retry after {retry_after}s")]
    TooManyRequests {
        /// Seconds until the lock ends.
        retry_after: u64,
    },
    /// The client is over its token-request limits (`rateLimit`, `quota`).
    #[error("slow_down: over the {limit} limit")]
    RateLimited {
        /// Seconds until a request would be admitted.
        retry_after: u64,
        /// `rate` or `quota`.
        limit: &'static str,
        /// The `RateLimit-Policy` header value.
        policy: String,
    },
    /// The body is over the size limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request was not completed in time (e.g. a body trickling in).
    #[error("request not completed within {secs}s")]
    Timeout {
        /// The limit.
        secs: u64,
    },
    /// The method is not allowed on this endpoint.
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// The server has nothing to serve yet (no snapshot loaded).
    #[error("temporarily_unavailable: {0}")]
    Unavailable(String),
    /// Every password check slot is taken: retry after `retry_after` seconds (503).
    #[error("temporarily_unavailable: password checks are at capacity")]
    Busy {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// An internal failure; the description is logged, never sent.
    #[error("server_error: {0}")]
    ServerError(String),
}

impl OAuthError {
    /// The `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_)
            | OAuthError::PayloadTooLarge { .. }
            | OAuthError::MethodNotAllowed(_)
            | OAuthError::Timeout { .. } => "invalid_request",
            OAuthError::InvalidClient { .. } => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::InvalidTarget(_) => "invalid_target",
            OAuthError::TooManyRequests { .. } | OAuthError::RateLimited { .. } => "slow_down",
            OAuthError::Unavailable(_) | OAuthError::Busy { .. } => "temporarily_unavailable",
            OAuthError::ServerError(_) => "server_error",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            OAuthError::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
            OAuthError::TooManyRequests { .. } | OAuthError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            OAuthError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            OAuthError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            OAuthError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            OAuthError::Unavailable(_) | OAuthError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            OAuthError::ServerError(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `error_description` sent (never an internal detail, never a secret), in the
    /// characters RFC 6749 §5.2 allows (%x20-21 / %x23-5B / %x5D-7E): anything else, such as a
    /// quote, a backslash, a control or non-ASCII character echoed from the request, becomes `?`,
    /// and it is cut to [`MAX_DESCRIPTION`] characters.
    pub fn description(&self) -> String {
        rfc6749_text(&self.raw_description())
    }

    fn raw_description(&self) -> String {
        match self {
            OAuthError::ServerError(_) => {
                "the server failed to handle the request; it has been logged".to_owned()
            }
            OAuthError::TooManyRequests { retry_after } => {
                format!(
                    "too many failed attempts from this address for this client or user; retry after {retry_after} seconds"
                )
            }
            OAuthError::Busy { retry_after } => {
                format!("every password check slot is busy; retry after {retry_after} seconds")
            }
            OAuthError::PayloadTooLarge { limit } => {
                format!("the request body is larger than {limit} bytes")
            }
            OAuthError::RateLimited {
                retry_after, limit, ..
            } => match *limit {
                "quota" => format!(
                    "this client has used its token quota for today (its policy's or Credential's quota); it resets at midnight UTC, in {retry_after} s"
                ),
                _ => format!(
                    "this client requests tokens faster than its rateLimit allows; retry in {retry_after} s, and reuse tokens until they expire"
                ),
            },
            OAuthError::Timeout { secs } => {
                format!("the request was not completed within {secs} seconds")
            }
            OAuthError::MethodNotAllowed(allowed) => format!("use {allowed} on this endpoint"),
            OAuthError::InvalidRequest(d)
            | OAuthError::InvalidGrant(d)
            | OAuthError::UnauthorizedClient(d)
            | OAuthError::UnsupportedGrantType(d)
            | OAuthError::InvalidScope(d)
            | OAuthError::InvalidTarget(d)
            | OAuthError::Unavailable(d)
            | OAuthError::InvalidClient { description: d, .. } => d.clone(),
        }
    }
}

/// Headers every token-endpoint response carries (RFC 6749 §5.1).
pub fn no_store(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The longest `error_description` sent.
pub const MAX_DESCRIPTION: usize = 512;

/// `s` in the characters RFC 6749 §5.2 allows in `error_description`.
pub fn rfc6749_text(s: &str) -> String {
    s.chars()
        .take(MAX_DESCRIPTION)
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '?',
        })
        .collect()
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({ "error": self.code(), "error_description": self.description() });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        let h = resp.headers_mut();
        no_store(h);
        match &self {
            OAuthError::InvalidClient { basic, .. } => {
                let v = if *basic {
                    r#"Basic realm="tessera", error="invalid_client""#
                } else {
                    r#"Basic realm="tessera""#
                };
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
            }
            OAuthError::TooManyRequests { retry_after } | OAuthError::Busy { retry_after } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            OAuthError::MethodNotAllowed(allowed) => {
                h.insert(header::ALLOW, HeaderValue::from_static(allowed));
            }
            OAuthError::RateLimited {
                retry_after,
                limit,
                policy,
            } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                let name = if *limit == "quota" { "day" } else { "burst" };
                if let Ok(v) = HeaderValue::from_str(policy) {
                    h.insert("ratelimit-policy", v);
                }
                if let Ok(v) = HeaderValue::from_str(&format!("\"{name}\";r=0;t={retry_after}")) {
                    h.insert("ratelimit", v);
                }
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_keep_to_the_rfc6749_character_set() {
        let e = OAuthError::InvalidScope("scope `a\"b\\c\u{7}ü` is not allowed".into());
        let d = e.description();
        assert_eq!(d, "scope `a?b?c??` is not allowed");
        assert!(
            d.chars()
                .all(|c| matches!(c as u32, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e))
        );
        let long = OAuthError::InvalidRequest("x".repeat(10_000));
        assert_eq!(long.description().len(), MAX_DESCRIPTION);
    }

    #[test]
    fn responses_follow_rfc6749() {
        let r = OAuthError::InvalidClient {
            description: "bad".into(),
            basic: true,
        }
        .into_response();
        assert_eq!(r.status(), 401);
        assert!(
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .is_ok_and(|v| v.starts_with("Basic"))
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let r = OAuthError::TooManyRequests { retry_after: 42 }.into_response();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()[header::RETRY_AFTER].to_str().ok()
            ),
            (429, Some("42"))
        );
        assert_eq!(OAuthError::InvalidTarget("x".into()).status(), 400);
        assert_eq!(
            OAuthError::ServerError("db exploded at 0xdead".into()).description(),
            "the server failed to handle the request; it has been logged"
        );
    }
}
