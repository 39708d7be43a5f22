//! Names and identifiers: Kubernetes object names, client ids, scope tokens and claim names.

/// Object-name pattern (DNS-1123 subdomain) for references to other objects in the namespace.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";
/// Longest object name Kubernetes allows.
pub const NAME_MAX: usize = 253;
/// A client_id: printable, no white space (RFC 6749 allows any VSCHAR; Basic encoding handles `:`).
pub const CLIENT_ID_PATTERN: &str = r"^\S+$";
/// Longest client_id.
pub const CLIENT_ID_MAX: usize = 256;
/// A scope token (RFC 6749 §3.3 `scope-token`: `%x21 / %x23-5B / %x5D-7E`).
pub const SCOPE_PATTERN: &str = r"^[!#-\[\]-~]+$";
/// Longest scope token.
pub const SCOPE_MAX: usize = 128;
/// A custom claim name.
pub const CLAIM_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_.:-]*$";
/// Longest custom claim name.
pub const CLAIM_MAX: usize = 64;
/// Longest custom claim value, in bytes.
pub const CLAIM_VALUE_MAX: usize = 1024;

/// Claim names a Credential's metadata may not set: the registered JWT claims (RFC 7519), the
/// RFC 9068 / RFC 8693 / RFC 8705 ones, and those the token server computes itself.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "cnf",
    "act",
    "may_act",
    "auth_time",
    "acr",
    "amr",
    "azp",
    "typ",
    "token_type",
    "username",
    "active",
    "roles",
    "groups",
    "entitlements",
    "tessera",
];

/// True if `s` is a valid object name to reference.
pub fn is_object_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= NAME_MAX
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// True if `s` is a valid client_id.
pub fn is_client_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= CLIENT_ID_MAX
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// True if `s` is a valid scope token.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SCOPE_MAX
        && s.bytes()
            .all(|c| c == 0x21 || (0x23..=0x5B).contains(&c) || (0x5D..=0x7E).contains(&c))
}

/// True if `s` is a valid custom claim name (reserved names are checked separately).
pub fn is_claim_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= CLAIM_MAX
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-'))
}

/// True if `s` may not be set from metadata.
pub fn is_reserved_claim(s: &str) -> bool {
    RESERVED_CLAIMS.contains(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        assert!(is_object_name("orders-api"));
        assert!(is_object_name("a.b-c"));
        for bad in ["", "Orders", "-a", "a-", "a_b", "a b", &"a".repeat(254)] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }

    #[test]
    fn client_ids() {
        assert!(is_client_id("app:1%+ü"));
        for bad in ["", "a b", "a\tb", "a\u{0}b", &"x".repeat(257)] {
            assert!(!is_client_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn scopes_and_claims() {
        assert!(is_scope_token("orders:read"));
        assert!(!is_scope_token("a b"));
        assert!(!is_scope_token("a\"b"));
        assert!(!is_scope_token("a\\b"));
        assert!(is_claim_name("tenant_id"));
        assert!(!is_claim_name("9lives"));
        assert!(!is_claim_name("has space"));
        assert!(
            is_reserved_claim("sub") && is_reserved_claim("cnf") && !is_reserved_claim("tenant")
        );
    }
}
