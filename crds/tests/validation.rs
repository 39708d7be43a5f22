//! Bad input for every resource field: each case names the object's field and the fix.

use tessera_crds::manifest::{self, Resource};
use tessera_crds::validate::{self, FieldProblem};

fn problems(yaml: &str) -> Vec<FieldProblem> {
    let parsed = manifest::parse(yaml, "case.yaml").unwrap_or_else(|e| panic!("{e}"));
    match parsed.resources.into_iter().next().expect("one object") {
        Resource::ApiProxy(o) => validate::api_proxy(&o),
        Resource::AuthPolicy(o) => validate::auth_policy(&o),
        Resource::Credential(o) => validate::credential(&o),
        Resource::Role(o) => validate::role(&o),
        Resource::Secret(_) | Resource::ConfigMap(_) => panic!("not validated here"),
    }
}

fn policy(spec: &str) -> String {
    format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: p}}\nspec: {spec}\n"
    )
}
fn credential(spec: &str) -> String {
    format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: c}}\nspec: {spec}\n"
    )
}
fn proxy(spec: &str) -> String {
    format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: ApiProxy\nmetadata: {{name: x}}\nspec: {spec}\n"
    )
}
fn role(spec: &str) -> String {
    format!("apiVersion: tessera.dev/v1alpha1\nkind: Role\nmetadata: {{name: r}}\nspec: {spec}\n")
}

/// Asserts the object has exactly the problem fields given, and each message contains its fix.
#[track_caller]
fn expect(yaml: &str, cases: &[(&str, &str)]) {
    let got = problems(yaml);
    let fields: Vec<&str> = got.iter().map(|p| p.field.as_str()).collect();
    let want: Vec<&str> = cases.iter().map(|c| c.0).collect();
    assert_eq!(fields, want, "{got:#?}");
    for (p, (_, fragment)) in got.iter().zip(cases) {
        assert!(
            p.message.contains(fragment),
            "{}: `{}` lacks `{fragment}`",
            p.field,
            p.message
        );
    }
}

#[test]
fn valid_objects_have_no_problems() {
    expect(
        &policy(
            "{grantTypes: [client_credentials, refresh_token], refresh: {enabled: true, ttl: 2h}, accessToken: {ttl: 30m}}",
        ),
        &[],
    );
    expect(
        &credential(
            "{policyRef: {name: p}, acl: [a], roles: [r], claims: {tenant: acme}, rotation: {interval: 720h, gracePeriod: 1h}}",
        ),
        &[],
    );
    expect(
        &proxy("{basePath: /orders, audience: 'https://api.example.com/orders'}"),
        &[],
    );
    expect(&role("{scope: 'orders:read', apiProxies: [a, b]}"), &[]);
}

#[test]
fn durations() {
    expect(
        &policy("{accessToken: {ttl: 1d}}"),
        &[("spec.accessToken.ttl", "e.g. `1h30m`")],
    );
    expect(
        &policy("{accessToken: {ttl: 0s}}"),
        &[("spec.accessToken.ttl", "at least 1s")],
    );
    expect(
        &policy("{accessToken: {ttl: ''}}"),
        &[("spec.accessToken.ttl", "empty duration")],
    );
    expect(
        &policy("{accessToken: {ttl: 99999h}}"),
        &[("spec.accessToken.ttl", "maximum")],
    );
    expect(
        &credential("{policyRef: {name: p}, rotation: {interval: soon}}"),
        &[("spec.rotation.interval", "hours, minutes and seconds")],
    );
}

#[test]
fn self_contradictory_policies() {
    expect(
        &policy("{accessToken: {immortal: true, ttl: 1h}}"),
        &[("spec.accessToken.ttl", "remove accessToken.ttl")],
    );
    expect(
        &policy(
            "{accessToken: {immortal: true}, grantTypes: [client_credentials, refresh_token], refresh: {enabled: true}}",
        ),
        &[("spec.refresh.enabled", "never refreshed")],
    );
    expect(
        &policy(
            "{accessToken: {ttl: 2h}, grantTypes: [client_credentials, refresh_token], refresh: {enabled: true, ttl: 1h}}",
        ),
        &[("spec.refresh.ttl", "longer than accessToken.ttl")],
    );
    expect(
        &policy(
            "{accessToken: {ttl: 48h}, grantTypes: [client_credentials, refresh_token], refresh: {enabled: true}}",
        ),
        &[("spec.refresh.ttl", "(86400s)")],
    );
    expect(
        &policy("{grantTypes: [client_credentials, refresh_token]}"),
        &[("spec.grantTypes", "add both or neither")],
    );
    expect(
        &policy("{refresh: {enabled: true}}"),
        &[("spec.grantTypes", "add both or neither")],
    );
    expect(
        &policy("{grantTypes: [password]}"),
        &[("spec.userPool", "argon2id")],
    );
    expect(
        &policy("{grantTypes: []}"),
        &[("spec.grantTypes", "at least one")],
    );
    expect(
        &policy("{clientAuthMethods: []}"),
        &[("spec.clientAuthMethods", "at least one")],
    );
    expect(
        &policy("{grantTypes: [client_credentials, client_credentials]}"),
        &[("spec.grantTypes", "listed twice")],
    );
    expect(
        &policy("{clientAuthMethods: [client_secret_post, client_secret_post]}"),
        &[("spec.clientAuthMethods", "listed twice")],
    );
    expect(
        &policy(
            "{grantTypes: [client_credentials, refresh_token], refresh: {enabled: true, maxRefreshes: 0}}",
        ),
        &[("spec.refresh.maxRefreshes", "between 1 and 100000")],
    );
    expect(
        &policy(
            "{grantTypes: [client_credentials, refresh_token], refresh: {enabled: true, rotate: false, maxRefreshes: 3}}",
        ),
        &[("spec.refresh.maxRefreshes", "set refresh.rotate to true")],
    );
}

#[test]
fn client_ca_references() {
    expect(&policy("{clientCa: {configMapRef: {name: bank-ca}}}"), &[]);
    expect(
        &policy("{clientCa: {}}"),
        &[("spec.clientCa", "exactly one of secretRef, configMapRef")],
    );
    expect(
        &policy("{clientCa: {secretRef: {name: a}, configMapRef: {name: b}}}"),
        &[("spec.clientCa", "exactly one")],
    );
    expect(
        &policy("{clientCa: {secretRef: {name: Bad}}}"),
        &[("spec.clientCa.secretRef.name", "not a valid Secret name")],
    );
}

#[test]
fn response_field_names() {
    expect(
        &policy("{tokenManagement: {responseFields: {accessToken: scope}}}"),
        &[(
            "spec.tokenManagement.responseFields.scope",
            "pick distinct names",
        )],
    );
    expect(
        &policy("{tokenManagement: {responseFields: {tokenType: '1bad name'}}}"),
        &[(
            "spec.tokenManagement.responseFields.tokenType",
            "usable JSON field name",
        )],
    );
}

#[test]
fn names_and_references() {
    let long = "a".repeat(250);
    expect(
        &format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: Role\nmetadata: {{name: {long}}}\nspec: {{}}\n"
        ),
        &[
            ("metadata.name", "leaves no room"),
            ("spec.scope", "not a usable scope"),
        ],
    );
    expect(
        "apiVersion: tessera.dev/v1alpha1\nkind: Role\nmetadata: {name: Bad_Name}\nspec: {scope: s}\n",
        &[("metadata.name", "lowercase letters")],
    );
    expect(
        "apiVersion: tessera.dev/v1alpha1\nkind: Role\nmetadata: {}\nspec: {scope: s}\n",
        &[("metadata.name", "needs a name")],
    );
    expect(
        "apiVersion: tessera.dev/v1alpha1\nkind: Role\nmetadata: {name: r, namespace: Not.Valid}\nspec: {}\n",
        &[("metadata.namespace", "DNS-1123 label")],
    );
    expect(
        &credential("{policyRef: {name: ''}}"),
        &[("spec.policyRef.name", "not a valid AuthPolicy name")],
    );
    expect(
        &credential("{policyRef: {name: p}, acl: [UPPER]}"),
        &[("spec.acl[0]", "not a valid ApiProxy name")],
    );
    expect(
        &credential("{policyRef: {name: p}, roles: [r, r]}"),
        &[("spec.roles[1]", "listed twice")],
    );
    expect(
        &role("{apiProxies: [a, a]}"),
        &[("spec.apiProxies[1]", "listed twice")],
    );
    let many: Vec<String> = (0..257).map(|i| format!("p{i}")).collect();
    expect(
        &credential(&format!(
            "{{policyRef: {{name: p}}, acl: [{}]}}",
            many.join(", ")
        )),
        &[("spec.acl", "more than 256")],
    );
    expect(
        &credential("{policyRef: {name: p}, secretRef: {name: s, key: 'bad key'}}"),
        &[("spec.secretRef.key", "letters, digits")],
    );
}

#[test]
fn client_ids() {
    expect(
        &credential("{clientId: 'two words', policyRef: {name: p}}"),
        &[("spec.clientId", "no white space")],
    );
    expect(
        &credential("{clientId: '', policyRef: {name: p}}"),
        &[("spec.clientId", "1 to 256")],
    );
    expect(
        &credential(&format!(
            "{{clientId: {}, policyRef: {{name: p}}}}",
            "x".repeat(257)
        )),
        &[("spec.clientId", "1 to 256")],
    );
    expect(
        &credential("{clientId: 'ok:%+ü', policyRef: {name: p}}"),
        &[],
    );
    expect(
        &proxy("{basePath: /p, proxyKey: {clientId: \"a\\tb\"}}"),
        &[("spec.proxyKey.clientId", "no white space")],
    );
}

#[test]
fn claims() {
    expect(
        &credential("{policyRef: {name: p}, claims: {sub: admin}}"),
        &[("spec.claims.sub", "cannot be set; rename")],
    );
    expect(
        &credential("{policyRef: {name: p}, claims: {cnf: x}}"),
        &[("spec.claims.cnf", "cannot be set")],
    );
    expect(
        &credential("{policyRef: {name: p}, claims: {'9lives': x}}"),
        &[("spec.claims.9lives", "starts with a letter")],
    );
    let big = "v".repeat(1025);
    expect(
        &credential(&format!(
            "{{policyRef: {{name: p}}, claims: {{note: {big}}}}}"
        )),
        &[("spec.claims.note", "longer than 1024")],
    );
    let many: Vec<String> = (0..65).map(|i| format!("c{i}: v")).collect();
    expect(
        &credential(&format!(
            "{{policyRef: {{name: p}}, claims: {{{}}}}}",
            many.join(", ")
        )),
        &[("spec.claims", "more than 64")],
    );
}

#[test]
fn rotation_mtls_expiry() {
    expect(
        &credential("{policyRef: {name: p}, secretRef: {name: s}, rotation: {interval: 24h}}"),
        &[("spec.rotation", "only generated secrets")],
    );
    expect(
        &credential("{policyRef: {name: p}, rotation: {interval: 1h, gracePeriod: 2h}}"),
        &[(
            "spec.rotation.gracePeriod",
            "shorter than the rotation interval",
        )],
    );
    expect(
        &credential("{policyRef: {name: p}, mtls: {}}"),
        &[("spec.mtls", "at least one")],
    );
    expect(
        &credential("{policyRef: {name: p}, mtls: {san: {dns: a, uri: b}}}"),
        &[("spec.mtls.san", "exactly one")],
    );
    expect(
        &credential("{policyRef: {name: p}, mtls: {san: {ip: 999.1.1.1}}}"),
        &[("spec.mtls.san.ip", "IPv4 or IPv6")],
    );
    expect(
        &credential("{policyRef: {name: p}, mtls: {thumbprintSha256: abc}}"),
        &[("spec.mtls.thumbprintSha256", "43 characters")],
    );
    expect(
        &credential("{policyRef: {name: p}, expiresAt: tomorrow}"),
        &[("spec.expiresAt", "RFC 3339")],
    );
}

#[test]
fn proxies_and_roles() {
    expect(
        &proxy("{basePath: orders}"),
        &[("spec.basePath", "start with `/`")],
    );
    expect(
        &proxy("{basePath: '/a b'}"),
        &[("spec.basePath", "no white space")],
    );
    expect(
        &proxy("{basePath: /a, audience: ''}"),
        &[("spec.audience", "1 to 512")],
    );
    expect(&role("{scope: 'a b'}"), &[("spec.scope", "RFC 6749")]);
    expect(
        &role(&format!("{{description: {}}}", "d".repeat(1025))),
        &[("spec.description", "1024")],
    );
}

#[test]
fn hostile_values_are_clipped_in_messages() {
    let hostile = "A".repeat(10_000);
    let got = problems(&proxy(&format!("{{basePath: {hostile}}}")));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].message.len() < 300,
        "message echoes at most a clipped value"
    );
}

#[test]
fn wrong_types_and_unknown_or_missing_fields_are_parse_errors_naming_the_field() {
    let cases = [
        (
            policy("{tokenType: JWS}"),
            "spec.tokenType",
            "unknown variant `JWS`",
        ),
        (
            policy("{grantTypes: implicit}"),
            "spec.grantTypes",
            "expected a sequence",
        ),
        (
            policy("{signingAlgorithm: HS256}"),
            "spec.signingAlgorithm",
            "expected one of `RS256`, `ES256`, `EdDSA`",
        ),
        (
            policy("{refresh: {enable: true}}"),
            "spec.refresh.enable",
            "unknown field `enable`",
        ),
        (
            credential("{acl: [a]}"),
            "spec",
            "missing field `policyRef`",
        ),
        (
            credential("{policyRef: p}"),
            "spec.policyRef",
            "expected struct LocalRef",
        ),
        (
            credential("{policyRef: {name: p}, claims: {n: [1]}}"),
            "spec.claims.n",
            "expected a string",
        ),
        (proxy("{audience: a}"), "spec", "missing field `basePath`"),
        (
            role("{apiProxies: [{name: a}]}"),
            "spec.apiProxies[0]",
            "expected a string",
        ),
    ];
    for (yaml, field, fragment) in cases {
        let err = manifest::parse(&yaml, "case.yaml")
            .expect_err(&yaml)
            .to_string();
        assert!(err.contains(&format!("field `{field}`")), "{err}");
        assert!(err.contains(fragment), "{err}");
    }
}

#[test]
fn rate_limits_and_quotas() {
    expect(
        &policy("{rateLimit: {requestsPerSecond: 50, burst: 100}, quota: {tokensPerDay: 100000}}"),
        &[],
    );
    expect(
        &policy("{rateLimit: {requestsPerSecond: 0}}"),
        &[("spec.rateLimit.requestsPerSecond", "between 1 and 100000")],
    );
    expect(
        &policy("{rateLimit: {requestsPerSecond: 10, burst: 0}}"),
        &[("spec.rateLimit.burst", "between 1 and 1000000")],
    );
    expect(
        &credential("{policyRef: {name: p}, clientId: c, quota: {tokensPerDay: 0}}"),
        &[("spec.quota.tokensPerDay", "between 1 and 1000000000")],
    );
    expect(
        &credential("{policyRef: {name: p}, clientId: c, quota: {tokensPerDay: -5}}"),
        &[("spec.quota.tokensPerDay", "remove quota for no limit")],
    );
    // Unknown, negative-as-unsigned and missing fields are refused by the parser, naming them.
    for (spec, field) in [
        (
            "{rateLimit: {requestsPerSecond: 5, perMinute: 9}}",
            "perMinute",
        ),
        ("{rateLimit: {burst: 5}}", "requestsPerSecond"),
        ("{rateLimit: {requestsPerSecond: -1}}", "rateLimit"),
        ("{quota: {}}", "tokensPerDay"),
    ] {
        let err = tessera_crds::manifest::parse(&policy(spec), "case.yaml")
            .err()
            .unwrap_or_else(|| panic!("{spec} was accepted"));
        assert!(err.to_string().contains(field), "{spec}: {err}");
    }
}

#[test]
fn jwks_hold_usable_public_keys_only() {
    let x = "A".repeat(43);
    let ok = format!(
        "{{policyRef: {{name: p}}, clientId: c, jwks: {{keys: [{{kty: OKP, crv: Ed25519, x: {x}}}]}}}}"
    );
    expect(&credential(&ok), &[]);
    let cases = [
        (
            format!("{{kty: OKP, crv: Ed25519, x: {x}, d: {x}}}"),
            "spec.jwks.keys[0]",
            "private key",
        ),
        (
            format!("{{kty: EC, crv: P-384, x: {x}, y: {x}}}"),
            "spec.jwks.keys[0]",
            "P-256",
        ),
        (
            format!("{{kty: OKP, crv: Ed25519, x: {x}, alg: RS256}}"),
            "spec.jwks.keys[0]",
            "does not go with",
        ),
        (
            "{kty: OKP, crv: Ed25519, x: 'not base64!'}".to_owned(),
            "spec.jwks.keys[0]",
            "base64url",
        ),
        (
            "{kty: RSA, n: AQAB, e: AQAB}".to_owned(),
            "spec.jwks.keys[0]",
            "2048 bits",
        ),
        (
            format!("{{kty: oct, x: {x}}}"),
            "spec.jwks.keys[0]",
            "not RSA, EC or OKP",
        ),
        (
            format!("{{kty: OKP, crv: Ed25519, x: {x}, use: enc}}"),
            "spec.jwks.keys[0].use",
            "sig",
        ),
    ];
    for (key, field, says) in cases {
        let spec = format!("{{policyRef: {{name: p}}, clientId: c, jwks: {{keys: [{key}]}}}}");
        expect(&credential(&spec), &[(field, says)]);
    }
    let two = format!(
        "{{policyRef: {{name: p}}, clientId: c, jwks: {{keys: [{{kty: OKP, crv: Ed25519, x: {x}}}, {{kty: OKP, crv: Ed25519, x: {x}}}]}}}}"
    );
    expect(
        &credential(&two),
        &[
            ("spec.jwks.keys[0].kid", "needs a kid"),
            ("spec.jwks.keys[1].kid", "needs a kid"),
        ],
    );
    let dup = format!(
        "{{policyRef: {{name: p}}, clientId: c, jwks: {{keys: [{{kty: OKP, crv: Ed25519, kid: a, x: {x}}}, {{kty: OKP, crv: Ed25519, kid: a, x: {x}}}]}}}}"
    );
    expect(
        &credential(&dup),
        &[("spec.jwks.keys[1].kid", "another key")],
    );
}

#[test]
fn a_jwks_reference_names_one_object() {
    expect(
        &credential("{policyRef: {name: p}, clientId: c, jwksRef: {secretRef: {name: k}}}"),
        &[],
    );
    expect(
        &credential(
            "{policyRef: {name: p}, clientId: c, jwksRef: {secretRef: {name: k}, configMapRef: {name: k}}}",
        ),
        &[("spec.jwksRef", "exactly one")],
    );
    expect(
        &credential("{policyRef: {name: p}, clientId: c, jwksRef: {}}"),
        &[("spec.jwksRef", "exactly one")],
    );
}

#[test]
fn a_jwks_uri_is_https_with_a_host_and_the_only_source_of_keys() {
    let with = |u: &str| {
        credential(&format!(
            "{{policyRef: {{name: p}}, clientId: c, jwksUri: '{u}'}}"
        ))
    };
    expect(&with("https://keys.example.com/.well-known/jwks.json"), &[]);
    expect(&with("https://[2001:db8::1]:8443/jwks"), &[]);
    for (u, why) in [
        ("http://keys.example.com/jwks", "https://"),
        ("https:///jwks", "with a host"),
        ("https://user:pw@keys.example.com/jwks", "user info"),
        ("https://keys.example.com/jwks#k", "fragment"),
        ("https://keys.example.com/a b", "spaces"),
    ] {
        expect(&with(u), &[("spec.jwksUri", why)]);
    }
    expect(
        &credential(
            "{policyRef: {name: p}, clientId: c, jwksUri: 'https://k.example.com/j', jwksRef: {secretRef: {name: k}}}",
        ),
        &[("spec.jwksUri", "one way")],
    );
}
