//! Validation of single objects, in Rust: the schema's and the CEL rules' checks, for manifests
//! that never pass through an API server (the `dir` source), plus what a schema cannot say
//! (duplicate renamed fields, timestamps). Each problem names the field and the fix.

use crate::auth_policy::{GrantType, ResponseFieldNames};
use crate::duration::parse_duration;
use crate::names;
use crate::{ApiProxy, AuthPolicy, Credential, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeSet;
use std::time::Duration;

/// One problem with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Path of the field, e.g. `spec.accessToken.ttl`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Default access-token lifetime.
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(3600);
/// Default refresh-token lifetime.
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default grace period of a secret rotation.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(3600);
/// Longest object name: generated Secrets are named `<name>-proxy-key`, within the 253 limit.
pub const MAX_OWNER_NAME: usize = names::NAME_MAX - "-proxy-key".len();

#[derive(Default)]
struct Problems(Vec<FieldProblem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldProblem {
            field: field.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, field: &str, value: Option<&str>) -> Option<Duration> {
        match parse_duration(value?) {
            Ok(d) => Some(d),
            Err(e) => {
                self.push(field, e.to_string());
                None
            }
        }
    }

    fn object_name(&mut self, field: &str, name: &str, what: &str) {
        if !names::is_object_name(name) {
            self.push(
                field,
                format!("`{}` is not a valid {what} name: use lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit, at most 253 characters", clip(name)),
            );
        }
    }

    fn name_list(&mut self, field: &str, list: &[String], what: &str) {
        if list.len() > 256 {
            self.push(
                field,
                format!(
                    "{} entries is more than 256; group them with Roles",
                    list.len()
                ),
            );
        }
        // Lists are short (ACLs, roles): a quadratic duplicate check beats allocating a set, and
        // field paths are only formatted for a problem (this runs for every object on a rebuild).
        for (i, n) in list.iter().enumerate() {
            if !names::is_object_name(n) {
                self.object_name(&format!("{field}[{i}]"), n, what);
            }
            if list[..i].contains(n) {
                self.push(
                    format!("{field}[{i}]"),
                    format!("`{}` is listed twice; remove the duplicate", clip(n)),
                );
            }
        }
    }
}

/// Shortens user input quoted in a message, so a hostile value cannot flood logs.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

fn metadata(p: &mut Problems, meta: &ObjectMeta) {
    match meta.name.as_deref() {
        None | Some("") => p.push("metadata.name", "missing; every object needs a name"),
        Some(n) => {
            p.object_name("metadata.name", n, "object");
            if n.len() > MAX_OWNER_NAME {
                p.push("metadata.name", format!("longer than {MAX_OWNER_NAME} characters, which leaves no room for the generated Secret's name; shorten it"));
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref()
        && (ns.len() > 63 || !names::is_object_name(ns) || ns.contains('.'))
    {
        p.push(
            "metadata.namespace",
            format!(
                "`{}` is not a valid namespace name (DNS-1123 label, at most 63 characters)",
                clip(ns)
            ),
        );
    }
}

fn client_id(p: &mut Problems, field: &str, id: Option<&str>) {
    if let Some(id) = id
        && !names::is_client_id(id)
    {
        p.push(
            field,
            "a client_id has 1 to 256 characters and no white space or control characters",
        );
    }
}

fn secret_ref(p: &mut Problems, field: &str, r: Option<&crate::common::SecretKeyRef>) {
    let Some(r) = r else { return };
    p.object_name(&format!("{field}.name"), &r.name, "Secret");
    if let Some(k) = &r.key
        && (k.is_empty()
            || k.len() > 253
            || !k
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
    {
        p.push(
            format!("{field}.key"),
            "a Secret key has letters, digits, `-`, `_` and `.` only",
        );
    }
}

/// The algorithm a public JWK signs with (its `alg`, else its type's default), or why it cannot
/// be used: the token server accepts exactly these.
pub fn jwk_algorithm(k: &crate::credential::Jwk) -> Result<&'static str, String> {
    use base64::Engine as _;
    let b64 = |v: &Option<String>, name: &str| -> Result<Vec<u8>, String> {
        let v = v
            .as_deref()
            .ok_or_else(|| format!("`{name}` is missing for kty {}", k.kty))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v)
            .map_err(|_| format!("`{name}` is not unpadded base64url"))
    };
    if k.d.is_some() {
        return Err("`d` is a private key member: put only the public key in the Credential and keep the private key with the client".into());
    }
    let (default, allowed): (&str, &[&str]) = match k.kty.as_str() {
        "RSA" => {
            if b64(&k.n, "n")?.len() < 256 {
                return Err("the RSA modulus is shorter than 2048 bits".into());
            }
            b64(&k.e, "e")?;
            ("RS256", &["RS256", "PS256"])
        }
        "EC" => {
            if k.crv.as_deref() != Some("P-256") {
                return Err("EC keys must be on crv P-256 (ES256)".into());
            }
            if b64(&k.x, "x")?.len() != 32 || b64(&k.y, "y")?.len() != 32 {
                return Err("`x` and `y` of a P-256 key are 32 bytes each".into());
            }
            ("ES256", &["ES256"])
        }
        "OKP" => {
            if k.crv.as_deref() != Some("Ed25519") {
                return Err("OKP keys must be crv Ed25519 (EdDSA)".into());
            }
            if b64(&k.x, "x")?.len() != 32 {
                return Err("`x` of an Ed25519 key is 32 bytes".into());
            }
            ("EdDSA", &["EdDSA"])
        }
        other => {
            return Err(format!(
                "kty `{}` is not RSA, EC or OKP",
                other.chars().take(16).collect::<String>()
            ));
        }
    };
    match k.alg.as_deref() {
        None => Ok(allowed
            .iter()
            .copied()
            .find(|a| *a == default)
            .unwrap_or("RS256")),
        Some(a) => allowed.iter().copied().find(|x| *x == a).ok_or_else(|| {
            format!(
                "alg `{}` does not go with kty {}; use one of {}",
                a.chars().take(16).collect::<String>(),
                k.kty,
                allowed.join(", ")
            )
        }),
    }
}

/// The problems of a JWKS (inline or read from a reference), as `(field under `prefix`, why)`.
pub fn jwks_problems(j: &crate::credential::Jwks) -> Vec<(String, String)> {
    let mut p = Problems::default();
    jwks(&mut p, j);
    p.0.into_iter().map(|f| (f.field, f.message)).collect()
}

fn jwks(p: &mut Problems, j: &crate::credential::Jwks) {
    if j.keys.is_empty() || j.keys.len() > 16 {
        p.push("spec.jwks.keys", "list 1 to 16 public keys");
    }
    let mut kids = BTreeSet::new();
    for (i, k) in j.keys.iter().enumerate() {
        if let Err(why) = jwk_algorithm(k) {
            p.push(format!("spec.jwks.keys[{i}]"), why);
        }
        match &k.kid {
            Some(kid) if !kids.insert(kid.as_str()) => p.push(
                format!("spec.jwks.keys[{i}].kid"),
                "used by another key; give each key its own kid",
            ),
            None if j.keys.len() > 1 => p.push(
                format!("spec.jwks.keys[{i}].kid"),
                "with several keys each needs a kid, which assertions name in their header",
            ),
            _ => {}
        }
        if k.use_.as_deref().is_some_and(|u| u != "sig") {
            p.push(format!("spec.jwks.keys[{i}].use"), "must be `sig`");
        }
    }
}

/// `spec.rateLimit` and `spec.quota` (the same ranges as the CRD schema).
fn limits(
    p: &mut Problems,
    rate: Option<&crate::common::RateLimit>,
    quota: Option<&crate::common::Quota>,
) {
    if let Some(r) = rate {
        if !(1..=100_000).contains(&r.requests_per_second) {
            p.push(
                "spec.rateLimit.requestsPerSecond",
                "must be between 1 and 100000; remove rateLimit for no limit",
            );
        }
        if r.burst.is_some_and(|b| !(1..=1_000_000).contains(&b)) {
            p.push(
                "spec.rateLimit.burst",
                "must be between 1 and 1000000; remove it to allow requestsPerSecond at once",
            );
        }
    }
    if quota.is_some_and(|q| !(1..=1_000_000_000).contains(&q.tokens_per_day)) {
        p.push(
            "spec.quota.tokensPerDay",
            "must be between 1 and 1000000000; remove quota for no limit",
        );
    }
}

/// Validates an AuthPolicy.
pub fn auth_policy(obj: &AuthPolicy) -> Vec<FieldProblem> {
    let mut p = Problems::default();
    metadata(&mut p, &obj.metadata);
    let s = &obj.spec;
    let access_ttl = p.duration("spec.accessToken.ttl", s.access_token.ttl.as_deref());
    let refresh_ttl = p.duration("spec.refresh.ttl", s.refresh.ttl.as_deref());
    if s.access_token.immortal && s.access_token.ttl.is_some() {
        p.push("spec.accessToken.ttl", "an immortal token has no ttl; remove accessToken.ttl or set accessToken.immortal to false");
    }
    if s.access_token.immortal && s.refresh.enabled {
        p.push("spec.refresh.enabled", "immortal access tokens are never refreshed; set refresh.enabled to false or accessToken.immortal to false");
    }
    if s.refresh.enabled && !s.access_token.immortal {
        let a = access_ttl.unwrap_or(DEFAULT_ACCESS_TTL);
        let r = refresh_ttl.unwrap_or(DEFAULT_REFRESH_TTL);
        if r <= a {
            p.push("spec.refresh.ttl", format!("a refresh token must outlive the access token; make refresh.ttl ({}s) longer than accessToken.ttl ({}s)", r.as_secs(), a.as_secs()));
        }
    }
    if s.grant_types.is_empty() {
        p.push(
            "spec.grantTypes",
            "empty; list at least one of client_credentials, password, refresh_token",
        );
    }
    let grants: BTreeSet<_> = s.grant_types.iter().collect();
    if grants.len() != s.grant_types.len() {
        p.push(
            "spec.grantTypes",
            "a grant type is listed twice; remove the duplicate",
        );
    }
    if grants.contains(&GrantType::RefreshToken) != s.refresh.enabled {
        p.push(
            "spec.grantTypes",
            "refresh_token in grantTypes and refresh.enabled go together; add both or neither",
        );
    }
    if grants.contains(&GrantType::Password) && s.user_pool.is_none() {
        p.push("spec.userPool", "the password grant checks users against a pool; set userPool to a Secret of argon2id hashes or remove password from grantTypes");
    }
    if let Some(pool) = &s.user_pool {
        p.object_name("spec.userPool.name", &pool.name, "Secret");
    }
    if s.client_auth_methods.is_empty() {
        p.push(
            "spec.clientAuthMethods",
            "empty; list at least one method, e.g. client_secret_basic",
        );
    }
    if s.client_auth_methods.iter().collect::<BTreeSet<_>>().len() != s.client_auth_methods.len() {
        p.push(
            "spec.clientAuthMethods",
            "a method is listed twice; remove the duplicate",
        );
    }
    if let Some(n) = s.refresh.max_refreshes
        && !(1..=100_000).contains(&n)
    {
        p.push(
            "spec.refresh.maxRefreshes",
            "must be between 1 and 100000; remove it for no limit",
        );
    }
    limits(&mut p, s.rate_limit.as_ref(), s.quota.as_ref());
    if s.refresh.max_refreshes.is_some() && !s.refresh.rotate {
        p.push(
            "spec.refresh.maxRefreshes",
            "the limit counts rotations; set refresh.rotate to true or remove maxRefreshes",
        );
    }
    response_fields(&mut p, &s.token_management.response_fields);
    if let Some(ca) = &s.client_ca {
        match (&ca.secret_ref, &ca.config_map_ref) {
            (Some(r), None) => p.object_name("spec.clientCa.secretRef.name", &r.name, "Secret"),
            (None, Some(r)) => {
                p.object_name("spec.clientCa.configMapRef.name", &r.name, "ConfigMap")
            }
            _ => p.push(
                "spec.clientCa",
                "set exactly one of secretRef, configMapRef",
            ),
        }
    }
    p.0
}

fn response_fields(p: &mut Problems, f: &ResponseFieldNames) {
    let fields = [
        ("accessToken", &f.access_token, "access_token"),
        ("tokenType", &f.token_type, "token_type"),
        ("expiresIn", &f.expires_in, "expires_in"),
        ("refreshToken", &f.refresh_token, "refresh_token"),
        ("scope", &f.scope, "scope"),
    ];
    let mut seen = BTreeSet::new();
    for (field, value, default) in fields {
        let name = value.as_deref().unwrap_or(default);
        let path = format!("spec.tokenManagement.responseFields.{field}");
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.as_bytes()[0].is_ascii_alphabetic() | (name.as_bytes()[0] == b'_')
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !valid {
            p.push(&path, format!("`{}` is not a usable JSON field name: letters, digits, `_`, `.`, `-`, starting with a letter or `_`", clip(name)));
        }
        if !seen.insert(name) {
            p.push(
                &path,
                format!(
                    "`{}` is already the name of another response field; pick distinct names",
                    clip(name)
                ),
            );
        }
    }
}

/// Validates an ApiProxy.
pub fn api_proxy(obj: &ApiProxy) -> Vec<FieldProblem> {
    let mut p = Problems::default();
    metadata(&mut p, &obj.metadata);
    let s = &obj.spec;
    if let Some(a) = &s.audience
        && (a.is_empty() || a.len() > 512 || a.chars().any(char::is_control))
    {
        p.push("spec.audience", "an audience has 1 to 512 characters and no control characters, e.g. https://api.example.com/orders");
    }
    if !s.base_path.starts_with('/')
        || s.base_path.len() > 512
        || s.base_path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        p.push(
            "spec.basePath",
            format!(
                "`{}` is not a path: start with `/`, no white space, at most 512 characters",
                clip(&s.base_path)
            ),
        );
    }
    if let Some(r) = &s.auth_policy_ref {
        p.object_name("spec.authPolicyRef.name", &r.name, "AuthPolicy");
    }
    if let Some(k) = &s.proxy_key {
        client_id(&mut p, "spec.proxyKey.clientId", k.client_id.as_deref());
        secret_ref(&mut p, "spec.proxyKey.secretRef", k.secret_ref.as_ref());
    }
    p.0
}

/// Validates a Role.
pub fn role(obj: &Role) -> Vec<FieldProblem> {
    let mut p = Problems::default();
    metadata(&mut p, &obj.metadata);
    let s = &obj.spec;
    if let Some(scope) = &s.scope
        && !names::is_scope_token(scope)
    {
        p.push("spec.scope", format!("`{}` is not a scope token (RFC 6749 §3.3): printable ASCII without space, `\"` or `\\`, at most 128 characters", clip(scope)));
    }
    if s.scope.is_none()
        && let Some(n) = &obj.metadata.name
        && !names::is_scope_token(n)
    {
        p.push(
            "spec.scope",
            "the Role's name is not a usable scope; set spec.scope",
        );
    }
    p.name_list("spec.apiProxies", &s.api_proxies, "ApiProxy");
    if s.description.as_ref().is_some_and(|d| d.len() > 1024) {
        p.push(
            "spec.description",
            "longer than 1024 characters; shorten it",
        );
    }
    p.0
}

/// Checks a `jwksUri`: `https://`, a host, no user info, no fragment, at most 2048 bytes. Which
/// addresses it may reach is the token server's check, at fetch time.
pub fn jwks_uri(u: &str) -> Result<(), &'static str> {
    if u.len() > 2048 {
        return Err("a URL of at most 2048 bytes");
    }
    let Some(rest) = u.strip_prefix("https://") else {
        return Err("an https:// URL: keys fetched over plain HTTP could be anyone's");
    };
    if u.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("a URL without spaces or control characters");
    }
    if u.contains('#') {
        return Err("a URL without a fragment (#…)");
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("a URL without user info (user@host): put no credentials in it");
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err("an https:// URL with a host, e.g. https://client.example.com/jwks.json");
    }
    Ok(())
}

/// Validates a Credential.
pub fn credential(obj: &Credential) -> Vec<FieldProblem> {
    let mut p = Problems::default();
    metadata(&mut p, &obj.metadata);
    let s = &obj.spec;
    client_id(&mut p, "spec.clientId", s.client_id.as_deref());
    secret_ref(&mut p, "spec.secretRef", s.secret_ref.as_ref());
    limits(&mut p, s.rate_limit.as_ref(), s.quota.as_ref());
    if let Some(j) = &s.jwks {
        jwks(&mut p, j);
    }
    if let Some(u) = &s.jwks_uri {
        if s.jwks.is_some() || s.jwks_ref.is_some() {
            p.push(
                "spec.jwksUri",
                "give the client's public keys one way (jwks, jwksRef or jwksUri); remove the others",
            );
        }
        if let Err(why) = jwks_uri(u) {
            p.push("spec.jwksUri", why);
        }
    }
    if let Some(r) = &s.jwks_ref {
        if s.jwks.is_some() {
            p.push(
                "spec.jwksRef",
                "give the keys inline (jwks) or by reference (jwksRef), not both",
            );
        }
        if r.secret_ref.is_some() == r.config_map_ref.is_some() {
            p.push(
                "spec.jwksRef",
                "name exactly one of secretRef or configMapRef",
            );
        }
    }
    if let Some(r) = &s.rotation {
        if s.secret_ref.is_some() {
            p.push(
                "spec.rotation",
                "only generated secrets are rotated; remove rotation or secretRef",
            );
        }
        let interval = p.duration("spec.rotation.interval", r.interval.as_deref());
        let grace = p
            .duration("spec.rotation.gracePeriod", r.grace_period.as_deref())
            .unwrap_or(DEFAULT_GRACE_PERIOD);
        if let Some(i) = interval
            && grace >= i
        {
            p.push(
                "spec.rotation.gracePeriod",
                "the grace period must be shorter than the rotation interval",
            );
        }
    }
    p.object_name("spec.policyRef.name", &s.policy_ref.name, "AuthPolicy");
    p.name_list("spec.acl", &s.acl, "ApiProxy");
    p.name_list("spec.roles", &s.roles, "Role");
    if s.claims.len() > 64 {
        p.push(
            "spec.claims",
            format!(
                "{} claims is more than 64; tokens must stay small",
                s.claims.len()
            ),
        );
    }
    for (k, v) in &s.claims {
        let field = || format!("spec.claims.{}", clip(k));
        if names::is_reserved_claim(k) {
            p.push(
                field(),
                format!(
                    "`{k}` is a registered or computed claim and cannot be set; rename the claim"
                ),
            );
        } else if !names::is_claim_name(k) {
            p.push(field(), "a claim name starts with a letter or `_` and has letters, digits, `_`, `.`, `:`, `-`, at most 64 characters");
        }
        if v.len() > names::CLAIM_VALUE_MAX {
            p.push(
                field(),
                format!(
                    "value longer than {} bytes; tokens must stay small",
                    names::CLAIM_VALUE_MAX
                ),
            );
        }
    }
    if let Some(m) = &s.mtls {
        if m.subject_dn.is_none() && m.san.is_none() && m.thumbprint_sha256.is_none() {
            p.push(
                "spec.mtls",
                "bind by subjectDn, san or thumbprintSha256; set at least one",
            );
        }
        if let Some(san) = &m.san {
            let set = [
                san.dns.is_some(),
                san.uri.is_some(),
                san.email.is_some(),
                san.ip.is_some(),
            ];
            if set.iter().filter(|x| **x).count() != 1 {
                p.push("spec.mtls.san", "set exactly one of dns, uri, email, ip");
            }
            if let Some(ip) = &san.ip
                && ip.parse::<std::net::IpAddr>().is_err()
            {
                p.push(
                    "spec.mtls.san.ip",
                    format!("`{}` is not an IPv4 or IPv6 address", clip(ip)),
                );
            }
        }
        if let Some(t) = &m.thumbprint_sha256
            && (t.len() != 43
                || !t
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'))
        {
            p.push("spec.mtls.thumbprintSha256", "the SHA-256 of the DER certificate as 43 characters of unpadded base64url (the x5t#S256 form)");
        }
    }
    if let Some(e) = &s.expires_at
        && e.parse::<jiff::Timestamp>().is_err()
    {
        p.push(
            "spec.expiresAt",
            format!(
                "`{}` is not an RFC 3339 time; write e.g. 2027-01-31T00:00:00Z",
                clip(e)
            ),
        );
    }
    p.0
}
