//! Reading the client's credentials from a request: HTTP Basic (RFC 6749 §2.3.1, where id and
//! secret are form-urlencoded before Base64) or the form body. Which one is allowed, and whether
//! the secret is right, is decided against the snapshot in `crate::auth`.

use crate::auth::{ClientCredentials, Presented};
use crate::error::OAuthError;
use crate::form::Params;
use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

fn form_decode(s: &str, what: &str) -> Result<String, OAuthError> {
    // One form-urlencoded value (RFC 6749 §2.3.1): `%XX` and `+`, nothing else. `&` and `=` are
    // data here, not separators: the form parser would cut `secret&junk=1` at the `&`.
    crate::form::decode_value(s).map_err(|_| {
        basic_err(&format!(
            "the {what} in the Basic header is not form-urlencoded UTF-8"
        ))
    })
}

fn basic_err(d: &str) -> OAuthError {
    OAuthError::InvalidClient {
        description: d.to_owned(),
        basic: true,
    }
}

/// Parses an `Authorization: Basic` header value.
pub fn parse_basic(value: &str) -> Result<(String, String), OAuthError> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(basic_err(
            "the Authorization header is not HTTP Basic; use Basic, or client_id and client_secret in the body",
        ));
    }
    let raw = STANDARD
        .decode(rest.trim())
        .map_err(|_| basic_err("the Basic credentials are not valid Base64"))?;
    let text =
        String::from_utf8(raw).map_err(|_| basic_err("the Basic credentials are not UTF-8"))?;
    let (id, secret) = text.split_once(':').ok_or_else(|| {
        basic_err("the Basic credentials have no `:` between client_id and secret")
    })?;
    let id = form_decode(id, "client_id")?;
    let secret = form_decode(secret, "client secret")?;
    if id.is_empty() {
        return Err(basic_err("the Basic credentials have an empty client_id"));
    }
    Ok((id, secret))
}

/// Refuses a client_id longer than any client can have: it cannot exist, so nothing is checked
/// and nothing about it is remembered.
fn bounded(id: String, basic: bool) -> Result<String, OAuthError> {
    if id.len() > tessera_crds::names::CLIENT_ID_MAX {
        return Err(OAuthError::InvalidClient {
            description: format!(
                "client_id is longer than {} bytes",
                tessera_crds::names::CLIENT_ID_MAX
            ),
            basic,
        });
    }
    Ok(id)
}

/// A `private_key_jwt` assertion (RFC 7523 §2.2), if the request sends one. Its client is the
/// `client_id` parameter, or else the assertion's own `sub` (RFC 7521 §4.2); a secret as well is
/// two methods at once, refused.
fn assertion(
    headers: &HeaderMap,
    params: &Params,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<Option<ClientCredentials>, OAuthError> {
    use crate::assertion::{JWT_BEARER, MAX_LEN, unverified_subject};
    let kind = params.get("client_assertion_type");
    let jwt = params.get("client_assertion");
    if kind.is_none() && jwt.is_none() {
        return Ok(None);
    }
    let invalid = |d: &str| OAuthError::InvalidClient {
        description: d.to_owned(),
        basic: false,
    };
    if kind != Some(JWT_BEARER) {
        return Err(invalid(
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ));
    }
    let Some(jwt) = jwt.filter(|j| !j.is_empty()) else {
        return Err(OAuthError::InvalidRequest(
            "client_assertion_type without client_assertion; send the signed JWT".into(),
        ));
    };
    if form_secret.is_some() || headers.contains_key(axum::http::header::AUTHORIZATION) {
        return Err(OAuthError::InvalidRequest(
            "the client sent both a secret and a client_assertion; use one method".into(),
        ));
    }
    if jwt.len() > MAX_LEN {
        return Err(invalid(&format!(
            "the client assertion is longer than {MAX_LEN} bytes"
        )));
    }
    let sub = unverified_subject(jwt);
    // A Kubernetes ServiceAccount token names its ServiceAccount, not a client: the binding
    // Credential is found once the cluster's issuer has verified it.
    if sub
        .as_deref()
        .is_some_and(|s| s.starts_with("system:serviceaccount:"))
    {
        return Ok(Some(ClientCredentials {
            client_id: bounded(form_id.unwrap_or_default().to_owned(), false)?,
            secret: Some(jwt.to_owned()),
            presented: Presented::ServiceAccount,
        }));
    }
    let id = match form_id {
        Some(id) => id.to_owned(),
        None => sub.ok_or_else(|| {
            invalid("the client assertion names no client (sub), and no client_id was sent")
        })?,
    };
    Ok(Some(ClientCredentials {
        client_id: bounded(id, false)?,
        secret: Some(jwt.to_owned()),
        presented: Presented::Assertion,
    }))
}

/// Reads the client's credentials from the Authorization header and the parameters; a request
/// with only a `client_id` over a connection with a client certificate is certificate
/// authentication. Two methods at once are refused (RFC 6749 §2.3: "MUST NOT use more than one").
pub fn read(
    headers: &HeaderMap,
    params: &Params,
    has_cert: bool,
) -> Result<ClientCredentials, OAuthError> {
    let form_id = params.get("client_id");
    let form_secret = params.get("client_secret");
    if let Some(c) = assertion(headers, params, form_id, form_secret)? {
        return Ok(c);
    }
    let auth = headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter()
        .collect::<Vec<_>>();
    if auth.len() > 1 {
        return Err(OAuthError::InvalidRequest(
            "more than one Authorization header".into(),
        ));
    }
    if let Some(h) = auth.first() {
        let v = h
            .to_str()
            .map_err(|_| basic_err("the Authorization header is not ASCII"))?;
        let (id, secret) = parse_basic(v)?;
        if form_secret.is_some() {
            return Err(OAuthError::InvalidRequest(
                "the client authenticated with both HTTP Basic and client_secret in the body; use one method".into(),
            ));
        }
        if form_id.is_some_and(|f| f != id) {
            return Err(OAuthError::InvalidRequest(
                "client_id in the body differs from the one in the Basic header".into(),
            ));
        }
        return Ok(ClientCredentials {
            client_id: bounded(id, true)?,
            secret: Some(secret),
            presented: Presented::Basic,
        });
    }
    match (form_id, form_secret) {
        (Some(id), Some(secret)) => Ok(ClientCredentials { client_id: bounded(id.to_owned(), false)?, secret: Some(secret.to_owned()), presented: Presented::Post }),
        (Some(id), None) => Ok(ClientCredentials {
            client_id: bounded(id.to_owned(), false)?,
            secret: None,
            presented: if has_cert { Presented::Certificate } else { Presented::IdOnly },
        }),
        (None, Some(_)) => Err(OAuthError::InvalidRequest("client_secret without client_id; send both".into())),
        (None, None) => Err(OAuthError::InvalidClient {
            description: "no client authentication: use HTTP Basic, or client_id and client_secret in the body".into(),
            basic: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(id: &str, secret: &str) -> String {
        // RFC 6749 §2.3.1: form-urlencode each part, then Base64 of `id:secret`.
        let enc = |s: &str| -> String {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
        )
    }

    #[test]
    fn basic_decodes_form_encoded_parts() {
        for (id, secret) in [
            ("app:1", "s%e+c:r et"),
            ("ünïcode", "pässwörd€"),
            ("plain", ""),
            ("a&b=c", "demo-secret&junk=1"),
        ] {
            assert_eq!(
                parse_basic(&basic(id, secret)).expect("parses"),
                (id.to_owned(), secret.to_owned()),
                "{id}"
            );
        }
        // `+` in the encoded form is a space, as in any form value.
        let raw = format!("Basic {}", STANDARD.encode("a+b:c+d"));
        assert_eq!(
            parse_basic(&raw).expect("parses"),
            ("a b".to_owned(), "c d".to_owned())
        );
    }

    #[test]
    fn raw_ampersands_and_equals_are_part_of_the_secret() {
        // A client that does not encode its secret: the whole secret is checked, not a prefix.
        let raw = format!(
            "Basic {}",
            STANDARD.encode("app:demo-secret-change-me&junk=1")
        );
        assert_eq!(
            parse_basic(&raw).expect("parses"),
            ("app".to_owned(), "demo-secret-change-me&junk=1".to_owned())
        );
        let raw = format!("Basic {}", STANDARD.encode("a=b:c=d&e"));
        assert_eq!(
            parse_basic(&raw).expect("parses"),
            ("a=b".to_owned(), "c=d&e".to_owned())
        );
        let raw = format!("Basic {}", STANDARD.encode("app:%0A"));
        assert!(parse_basic(&raw).is_err(), "control characters are refused");
    }

    #[test]
    fn basic_rejects_malformed_headers() {
        for bad in [
            "Bearer abc",
            "Basic !!!",
            &format!("Basic {}", STANDARD.encode("no-colon")),
            &format!("Basic {}", STANDARD.encode(":s")),
            &format!("Basic {}", STANDARD.encode([0xffu8, b':', b'x'])),
            &format!("Basic {}", STANDARD.encode("a%zz:b")),
        ] {
            assert!(
                matches!(
                    parse_basic(bad),
                    Err(OAuthError::InvalidClient { basic: true, .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn two_methods_at_once_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&basic("a", "b")).expect("header"),
        );
        let p = Params::parse(b"client_id=a&client_secret=b").expect("params");
        assert!(
            matches!(read(&h, &p, false), Err(OAuthError::InvalidRequest(m)) if m.contains("use one method"))
        );
        let p = Params::parse(b"client_id=other").expect("params");
        assert!(matches!(
            read(&h, &p, false),
            Err(OAuthError::InvalidRequest(_))
        ));
        let p = Params::parse(b"client_id=a").expect("params");
        assert_eq!(read(&h, &p, false).expect("ok").presented, Presented::Basic);
    }

    #[test]
    fn client_ids_longer_than_any_client_are_refused_before_anything_else() {
        let long = "x".repeat(tessera_crds::names::CLIENT_ID_MAX + 1);
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&basic(&long, "s")).expect("header"),
        );
        assert!(matches!(
            read(&h, &Params::default(), false),
            Err(OAuthError::InvalidClient { basic: true, .. })
        ));
        let p = Params::parse(format!("client_id={long}&client_secret=s").as_bytes()).expect("p");
        assert!(matches!(
            read(&HeaderMap::new(), &p, false),
            Err(OAuthError::InvalidClient { basic: false, .. })
        ));
        let ok = "x".repeat(tessera_crds::names::CLIENT_ID_MAX);
        let p = Params::parse(format!("client_id={ok}&client_secret=s").as_bytes()).expect("p");
        assert!(read(&HeaderMap::new(), &p, false).is_ok());
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = ClientCredentials {
            client_id: "a".into(),
            secret: Some("hunter2".into()),
            presented: Presented::Post,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
