//! Strict `application/x-www-form-urlencoded` decoding for the OAuth endpoints.
//!
//! Stricter than a browser form parser on purpose (RFC 6749 §3.2: "Request and response
//! parameters MUST NOT be included more than once"): a repeated parameter, a `%` not followed by
//! two hex digits, or bytes that are not UTF-8 after decoding are errors naming the parameter,
//! never silently repaired. Empty values count as absent (RFC 6749 §3.1). The decoding itself is
//! the `percent-encoding` crate's.

use crate::error::OAuthError;
use percent_encoding::percent_decode;

/// Parameters that may repeat: RFC 8707 `resource` and RFC 8693 `audience`.
const REPEATABLE: &[&str] = &["resource", "audience"];
/// Most parameters in one request.
pub const MAX_PARAMS: usize = 32;
/// Longest parameter name.
const MAX_NAME: usize = 64;

/// Decoded request parameters, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

fn decode(raw: &str, what: &str) -> Result<String, OAuthError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(OAuthError::InvalidRequest(format!(
                    "{what} has a `%` not followed by two hex digits; percent-encode it as %25"
                )));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let plus_as_space = raw.replace('+', " ");
    let decoded: Vec<u8> = percent_decode(plus_as_space.as_bytes()).collect();
    String::from_utf8(decoded).map_err(|_| {
        OAuthError::InvalidRequest(format!("{what} is not UTF-8 after percent-decoding"))
    })
}

/// Decodes one form-urlencoded value on its own (`%XX` and `+` as space; `&` and `=` are data):
/// for values that do not come in a form, such as the halves of HTTP Basic credentials.
/// Control characters other than tab are refused, as in a form.
pub fn decode_value(raw: &str) -> Result<String, OAuthError> {
    let v = decode(raw, "the value")?;
    if has_control(&v) {
        return Err(OAuthError::InvalidRequest(
            "the value contains control characters".into(),
        ));
    }
    Ok(v)
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control() && c != '\t')
}

impl Params {
    /// Parses a form body or query string.
    pub fn parse(input: &[u8]) -> Result<Params, OAuthError> {
        let input = std::str::from_utf8(input).map_err(|_| {
            OAuthError::InvalidRequest(
                "the body is not UTF-8; send application/x-www-form-urlencoded".into(),
            )
        })?;
        let mut out: Vec<(String, String)> = Vec::new();
        for pair in input.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(k, "a parameter name")?;
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(OAuthError::InvalidRequest(
                    "a parameter has an empty or over-long name".into(),
                ));
            }
            // Names are echoed in errors and logs: no control characters (tab included).
            if name.chars().any(char::is_control) {
                return Err(OAuthError::InvalidRequest(
                    "a parameter name contains control characters".into(),
                ));
            }
            let value = decode(v, &format!("parameter `{name}`"))?;
            if has_control(&value) {
                return Err(OAuthError::InvalidRequest(format!(
                    "parameter `{name}` contains control characters"
                )));
            }
            if value.is_empty() {
                continue;
            }
            if !REPEATABLE.contains(&name.as_str()) && out.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::InvalidRequest(format!(
                    "parameter `{name}` is included more than once; send it once"
                )));
            }
            if out.len() == MAX_PARAMS {
                return Err(OAuthError::InvalidRequest(format!(
                    "more than {MAX_PARAMS} parameters"
                )));
            }
            out.push((name, value));
        }
        Ok(Params(out))
    }

    /// The value of a parameter that appears at most once.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// True if no parameter was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A required parameter.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::InvalidRequest(format!("missing parameter `{name}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_percent_and_utf8() {
        let p = Params::parse(b"grant_type=client_credentials&scope=a+b%3Ac&client_id=%C3%BC")
            .expect("ok");
        assert_eq!(p.get("scope"), Some("a b:c"));
        assert_eq!(p.get("client_id"), Some("ü"));
        assert_eq!(p.get("missing"), None);
    }

    #[test]
    fn empty_values_are_absent_and_resource_may_repeat() {
        let p = Params::parse(b"scope=&resource=a&resource=b&&").expect("ok");
        assert_eq!(p.get("scope"), None);
        assert_eq!(p.all("resource"), ["a", "b"]);
    }

    #[test]
    fn rejects_duplicates_bad_encoding_and_non_utf8() {
        let err = |b: &[u8]| Params::parse(b).expect_err("must fail").to_string();
        assert!(err(b"scope=a&scope=b").contains("`scope` is included more than once"));
        assert!(err(b"scope=100%").contains("two hex digits"));
        assert!(err(b"scope=%zz").contains("two hex digits"));
        assert!(err(b"scope=%FF%FE").contains("not UTF-8"));
        assert!(err(b"\xff=1").contains("not UTF-8"));
        assert!(err(b"a=%00").contains("control characters"));
        assert!(err(b"a%0A=1").contains("name contains control characters"));
        assert!(err(b"a\x1b[31m=1").contains("name contains control characters"));
        assert!(err(b"a%09=1").contains("name contains control characters"));
        assert!(err(b"=x").contains("empty or over-long name"));
        let many: Vec<String> = (0..40).map(|i| format!("p{i}=v")).collect();
        assert!(err(many.join("&").as_bytes()).contains("more than 32"));
    }
}
