//! The token response (RFC 6749 §5.1), shaped by the policy's token-management settings: renamed
//! fields, access token only, `expires_in` in milliseconds, `scope` returned or not.

use super::Issued;
use serde_json::{Map, Value};
use tessera_crds::auth_policy::{ExpiresInUnit, TokenManagement};

/// The JSON body for an issued token.
pub fn body(tm: &TokenManagement, issued: &Issued) -> Value {
    let f = &tm.response_fields;
    let name = |custom: &Option<String>, default: &'static str| {
        custom.clone().unwrap_or_else(|| default.to_owned())
    };
    let mut m = Map::new();
    m.insert(
        name(&f.access_token, "access_token"),
        Value::from(issued.access_token.clone()),
    );
    if tm.access_token_only {
        return Value::Object(m);
    }
    m.insert(name(&f.token_type, "token_type"), Value::from("Bearer"));
    if let Some(secs) = issued.expires_in {
        let v = match tm.expires_in_unit {
            ExpiresInUnit::Seconds => secs,
            ExpiresInUnit::Milliseconds => secs.saturating_mul(1000),
        };
        m.insert(name(&f.expires_in, "expires_in"), Value::from(v));
    }
    if tm.return_scope {
        let scope: Vec<&str> = issued.scope.iter().map(|s| &**s).collect();
        m.insert(name(&f.scope, "scope"), Value::from(scope.join(" ")));
    }
    if let Some(rt) = &issued.refresh_token {
        m.insert(
            name(&f.refresh_token, "refresh_token"),
            Value::from(rt.clone()),
        );
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn issued() -> Issued {
        Issued {
            access_token: "at".into(),
            expires_in: Some(900),
            scope: vec![Arc::from("a"), Arc::from("b")],
            refresh_token: Some("rt".into()),
            token_id: "j".into(),
            audience: crate::token::claims::Audience::One("https://api.test".into()),
            username: None,
        }
    }

    #[test]
    fn strict_rfc6749_by_default() {
        let v = body(&TokenManagement::default(), &issued());
        assert_eq!(
            v,
            serde_json::json!({"access_token": "at", "token_type": "Bearer", "expires_in": 900, "scope": "a b", "refresh_token": "rt"})
        );
    }

    #[test]
    fn compatibility_options() {
        let mut tm = TokenManagement {
            expires_in_unit: ExpiresInUnit::Milliseconds,
            return_scope: false,
            ..Default::default()
        };
        tm.response_fields.access_token = Some("token".into());
        tm.response_fields.expires_in = Some("expiresIn".into());
        let v = body(&tm, &issued());
        assert_eq!(
            v,
            serde_json::json!({"token": "at", "token_type": "Bearer", "expiresIn": 900000, "refresh_token": "rt"})
        );
        tm.access_token_only = true;
        assert_eq!(body(&tm, &issued()), serde_json::json!({"token": "at"}));
        let immortal = Issued {
            expires_in: None,
            refresh_token: None,
            ..issued()
        };
        let v = body(&TokenManagement::default(), &immortal);
        assert!(v.get("expires_in").is_none() && v.get("refresh_token").is_none());
    }
}
