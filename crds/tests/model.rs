//! The resolved model's rules, on small YAML fixtures.

use jiff::Timestamp;
use tessera_crds::manifest;
use tessera_crds::model::{ClientKind, Kind, ObjectRef, Reason, ResourceSet, Snapshot, resolve};
use tessera_crds::secret::VerifierKey;

const KEY: [u8; 32] = [9u8; 32];

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().expect("timestamp")
}

fn snap(yaml: &str) -> Snapshot {
    let parsed = manifest::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    let set: ResourceSet = parsed.resources.into_iter().collect();
    resolve(&set, &VerifierKey::new(KEY.to_vec()), now())
}

fn obj(kind: Kind, ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: ns.into(),
        name: name.into(),
    }
}

fn reasons(s: &Snapshot, kind: Kind, ns: &str, name: &str) -> Vec<Reason> {
    s.report()
        .problems(&obj(kind, ns, name))
        .iter()
        .map(|p| p.reason)
        .collect()
}

fn messages(s: &Snapshot, kind: Kind, ns: &str, name: &str) -> String {
    s.report()
        .problems(&obj(kind, ns, name))
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

const BASE: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: acl}
spec: {}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: managed}
spec: {management: Policy}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: a}
spec: {basePath: /a, audience: aud-a}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: b}
spec: {basePath: /b, audience: aud-b}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: old}
spec: {basePath: /old, audience: aud-old, retired: true}
---
apiVersion: tessera.dev/v1alpha1
kind: Role
metadata: {name: reader}
spec: {scope: "r:read", apiProxies: [b, old]}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {client_secret: hunter2-but-longer}
"#;

fn with(extra: &str) -> Snapshot {
    snap(&format!("{BASE}\n---\n{extra}"))
}

fn cred(name: &str, body: &str) -> String {
    format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: {name}}}\nspec: {body}\n"
    )
}

#[test]
fn acl_plus_roles_and_retired_proxies_grant_nothing() {
    let s = with(&cred(
        "c",
        "{clientId: c1, secretRef: {name: s}, policyRef: {name: acl}, acl: [a, old], roles: [reader]}",
    ));
    let c = s.client("c1").expect("client");
    let auds: Vec<&str> = c.audiences.iter().map(|a| &**a).collect();
    assert_eq!(
        auds,
        ["aud-a", "aud-b"],
        "retired `old` is granted neither by ACL nor by Role"
    );
    assert_eq!(c.scopes.len(), 1);
    assert!(c.holds_scope("r:read"));
    assert!(s.audience_owner("aud-old").is_none());
    assert!(reasons(&s, Kind::Credential, "default", "c").is_empty());
}

#[test]
fn secret_checks_are_against_the_referenced_secret() {
    let s = with(&cred(
        "c",
        "{clientId: c1, secretRef: {name: s}, policyRef: {name: acl}}",
    ));
    let c = s.client("c1").expect("client");
    let k = VerifierKey::new(KEY.to_vec());
    assert!(c.check_secret(&k, b"hunter2-but-longer", now()));
    assert!(!c.check_secret(&k, b"hunter2", now()));
    assert!(
        !c.check_secret(
            &VerifierKey::new(vec![1u8; 32]),
            b"hunter2-but-longer",
            now()
        ),
        "another verifier key"
    );
}

#[test]
fn published_verifiers_win_and_grace_periods_end() {
    let k = VerifierKey::new(KEY.to_vec());
    let binding = tessera_crds::secret::verifier_binding(None, "Credential", "default", "c");
    let new = k.verifier(&binding, b"new-secret").to_published();
    let old = k.verifier(&binding, b"old-secret").to_published();
    let body = format!(
        "{{metadata: {{name: c}}, spec: {{policyRef: {{name: acl}}}}, status: {{clientId: gen-1, secretVerifiers: [{{verifier: '{new}'}}, {{verifier: '{old}', notAfter: '2026-06-01T01:00:00Z'}}]}}}}"
    );
    let y = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: Credential\n{}",
        &body[1..body.len() - 1]
            .replace(", spec:", "\nspec:")
            .replace(", status:", "\nstatus:")
    );
    let s = with(&y);
    let c = s.client("gen-1").expect("client_id from status");
    assert!(c.check_secret(&k, b"new-secret", now()));
    assert!(
        c.check_secret(&k, b"old-secret", now()),
        "inside the grace period"
    );
    let later: Timestamp = "2026-06-01T01:00:00Z".parse().expect("ts");
    assert!(
        !c.check_secret(&k, b"old-secret", later),
        "grace period over"
    );
    assert!(c.check_secret(&k, b"new-secret", later));
}

#[test]
fn disabled_and_expired_credentials_authenticate_nothing() {
    let s = with(&format!(
        "{}---\n{}",
        cred(
            "switched-off",
            "{clientId: off-1, secretRef: {name: s}, policyRef: {name: acl}, disabled: true}"
        ),
        cred(
            "gone",
            "{clientId: gone, secretRef: {name: s}, policyRef: {name: acl}, expiresAt: '2026-05-31T23:59:59Z'}"
        )
    ));
    assert!(s.client("off-1").is_none() && s.client("gone").is_none());
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "switched-off"),
        [Reason::Disabled]
    );
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "gone"),
        [Reason::Expired]
    );

    let s = with(&cred(
        "soon",
        "{clientId: soon, secretRef: {name: s}, policyRef: {name: acl}, expiresAt: '2026-06-01T00:00:10Z'}",
    ));
    let c = s.client("soon").expect("not yet expired");
    assert!(c.is_active(now()));
    assert!(
        !c.is_active("2026-06-01T00:00:10Z".parse().expect("ts")),
        "expiry is also checked per request"
    );
}

#[test]
fn policy_managed_proxy_is_a_client_with_its_proxy_key() {
    let s = with(
        "apiVersion: tessera.dev/v1alpha1\nkind: ApiProxy\nmetadata: {name: pay}\nspec: {basePath: /pay, authPolicyRef: {name: managed}, proxyKey: {clientId: pay-key, secretRef: {name: s}}}\n---\napiVersion: tessera.dev/v1alpha1\nkind: Role\nmetadata: {name: payer}\nspec: {apiProxies: [pay]}\n",
    );
    let c = s.client("pay-key").expect("proxy key");
    assert_eq!(c.kind, ClientKind::ProxyKey);
    assert_eq!(
        c.audiences.iter().map(|a| &**a).collect::<Vec<_>>(),
        ["pay"],
        "audience defaults to the name"
    );
    assert!(c.holds_scope("payer"), "scope defaults to the Role's name");
    // A proxy with an ACL-managed policy is only an audience.
    let s = with(
        "apiVersion: tessera.dev/v1alpha1\nkind: ApiProxy\nmetadata: {name: pay}\nspec: {basePath: /pay, authPolicyRef: {name: acl}, proxyKey: {clientId: pay-key}}\n",
    );
    assert!(s.client("pay-key").is_none());
    assert!(reasons(&s, Kind::ApiProxy, "default", "pay").is_empty());
}

#[test]
fn credential_with_a_policy_managed_policy_is_a_mode_mismatch() {
    let s = with(&cred(
        "c",
        "{clientId: c1, secretRef: {name: s}, policyRef: {name: managed}}",
    ));
    assert!(s.client("c1").is_none());
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "c"),
        [Reason::PolicyModeMismatch]
    );
}

#[test]
fn client_id_conflict_the_older_keeps_it() {
    let y = "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: young, creationTimestamp: '2026-02-01T00:00:00Z'}\nspec: {clientId: same, secretRef: {name: s}, policyRef: {name: acl}, acl: [b]}\n---\napiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: zold, creationTimestamp: '2026-01-01T00:00:00Z'}\nspec: {clientId: same, secretRef: {name: s}, policyRef: {name: acl}, acl: [a]}\n";
    let s = with(y);
    assert_eq!(
        &*s.client("same").expect("held").owner.name,
        "zold",
        "older, although later in the input and by name"
    );
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "young"),
        [Reason::ClientIdConflict]
    );
    assert!(messages(&s, Kind::Credential, "default", "young").contains("Credential default/zold"));
    assert!(reasons(&s, Kind::Credential, "default", "zold").is_empty());
}

#[test]
fn a_proxy_key_and_a_credential_conflict_too() {
    let y = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: ApiProxy\nmetadata: {{name: pay, creationTimestamp: '2026-01-01T00:00:00Z'}}\nspec: {{basePath: /pay, authPolicyRef: {{name: managed}}, proxyKey: {{clientId: dup, secretRef: {{name: s}}}}}}\n---\n{}",
        cred(
            "c",
            "{clientId: dup, secretRef: {name: s}, policyRef: {name: acl}}"
        )
    );
    let s = with(&y);
    assert_eq!(s.client("dup").expect("held").kind, ClientKind::ProxyKey);
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "c"),
        [Reason::ClientIdConflict]
    );
}

#[test]
fn audiences_are_unique_across_namespaces() {
    let y = "apiVersion: tessera.dev/v1alpha1\nkind: ApiProxy\nmetadata: {name: a, namespace: other}\nspec: {basePath: /a, audience: aud-a}\n";
    let s = with(y);
    assert_eq!(
        reasons(&s, Kind::ApiProxy, "other", "a"),
        [Reason::AudienceConflict]
    );
    assert_eq!(
        s.audience_owner("aud-a").map(|o| &*o.namespace),
        Some("default")
    );
}

#[test]
fn missing_references_stop_only_their_object() {
    let y = format!(
        "{}---\n{}---\n{}---\n{}",
        cred(
            "no-policy",
            "{clientId: n1, secretRef: {name: s}, policyRef: {name: nope}}"
        ),
        cred(
            "no-proxy",
            "{clientId: n2, secretRef: {name: s}, policyRef: {name: acl}, acl: [a, ghost], roles: [reader, phantom]}"
        ),
        cred(
            "no-secret",
            "{clientId: n3, secretRef: {name: absent}, policyRef: {name: acl}}"
        ),
        cred(
            "ok",
            "{clientId: n4, secretRef: {name: s}, policyRef: {name: acl}, acl: [a]}"
        ),
    );
    let s = with(&y);
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "no-policy"),
        [Reason::PolicyNotFound]
    );
    assert!(s.client("n1").is_none());
    // A missing proxy or role only removes what it would have granted.
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "no-proxy"),
        [Reason::ProxyNotFound, Reason::RoleNotFound]
    );
    let c = s.client("n2").expect("still serves the rest");
    assert!(c.may_call("aud-a") && c.may_call("aud-b") && !c.may_call("ghost"));
    assert!(messages(&s, Kind::Credential, "default", "no-proxy").contains("spec.acl[1]"));
    // A missing referenced Secret is never invented.
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "no-secret"),
        [Reason::SecretNotFound]
    );
    assert!(s.client("n3").is_none());
    assert!(s.client("n4").is_some());
    assert!(reasons(&s, Kind::Credential, "default", "ok").is_empty());
}

#[test]
fn secret_key_missing_empty_or_pending() {
    let y = format!(
        "{}---\n{}---\n{}---\n{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: empty}}\nstringData: {{client_secret: ''}}\n",
        cred(
            "wrong-key",
            "{clientId: k1, secretRef: {name: s, key: password}, policyRef: {name: acl}}"
        ),
        cred("pending", "{clientId: k2, policyRef: {name: acl}}"),
        cred("no-id", "{secretRef: {name: s}, policyRef: {name: acl}}"),
        cred(
            "empty-secret",
            "{clientId: k4, secretRef: {name: empty}, policyRef: {name: acl}}"
        ),
    );
    let s = with(&y);
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "wrong-key"),
        [Reason::SecretKeyNotFound]
    );
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "pending"),
        [Reason::SecretPending]
    );
    assert!(
        messages(&s, Kind::Credential, "default", "pending").contains("pending-client"),
        "names the Secret to add"
    );
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "no-id"),
        [Reason::ClientIdPending]
    );
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "empty-secret"),
        [Reason::Invalid]
    );
    assert_eq!(s.counts().clients, 0);
}

#[test]
fn generated_secret_is_read_from_its_conventional_name() {
    let y = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: gen-client}}\ndata: {{client_secret: Z2VuZXJhdGVk}}\n",
        cred("gen", "{clientId: g, policyRef: {name: acl}}")
    );
    let s = with(&y);
    assert!(s.client("g").expect("client").check_secret(
        &VerifierKey::new(KEY.to_vec()),
        b"generated",
        now()
    ));
}

#[test]
fn references_stay_in_the_namespace() {
    let y = "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {name: c, namespace: team-b}\nspec: {clientId: x, secretRef: {name: s}, policyRef: {name: acl}}\n";
    let s = with(y);
    assert_eq!(
        reasons(&s, Kind::Credential, "team-b", "c"),
        [Reason::PolicyNotFound]
    );
    assert!(messages(&s, Kind::Credential, "team-b", "c").contains("namespace team-b"));
}

#[test]
fn an_invalid_policy_is_named_as_invalid_by_its_credentials() {
    let y = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: broken}}\nspec: {{accessToken: {{immortal: true, ttl: 1h}}}}\n---\n{}",
        cred(
            "c",
            "{clientId: c, secretRef: {name: s}, policyRef: {name: broken}}"
        )
    );
    let s = with(&y);
    assert_eq!(
        reasons(&s, Kind::AuthPolicy, "default", "broken"),
        [Reason::Invalid]
    );
    assert!(messages(&s, Kind::Credential, "default", "c").contains("is not valid"));
}

#[test]
fn user_pool_entries_that_are_not_argon2id_are_reported_and_left_out() {
    let y = "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {name: pw}\nspec: {grantTypes: [password], userPool: {name: pool}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: pool}\nstringData:\n  good: $argon2id$v=19$m=19456,t=2,p=1$LqznMbJhu4Fj1acGEEoINA$L/2hEu57damxMU+/UB/sxQ/eRM9DYsJzphuBoClqxJo\n  plain: hunter2\n  bcrypt: $2b$12$abcdefghijklmnopqrstuuH5Y5r6JtXkQYc7tKqgH8Yl1bbbbbbbb\n---\n";
    let y = format!(
        "{y}{}",
        cred(
            "c",
            "{clientId: c, secretRef: {name: s}, policyRef: {name: pw}}"
        )
    );
    let s = with(&y);
    assert_eq!(
        reasons(&s, Kind::AuthPolicy, "default", "pw"),
        [Reason::UserPoolInvalid]
    );
    let msg = messages(&s, Kind::AuthPolicy, "default", "pw");
    assert!(
        msg.contains("bcrypt, plain") && !msg.contains("hunter2"),
        "names users, never values: {msg}"
    );
    let users = s
        .client("c")
        .expect("client")
        .policy
        .users
        .clone()
        .expect("pool");
    assert_eq!(users.len(), 1);
    assert!(users.hash_of("good").is_some());
}

#[test]
fn missing_user_pool_is_secret_not_found_but_the_policy_still_serves() {
    let y = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: pw}}\nspec: {{grantTypes: [client_credentials, password], userPool: {{name: nopool}}}}\n---\n{}",
        cred(
            "c",
            "{clientId: c, secretRef: {name: s}, policyRef: {name: pw}}"
        )
    );
    let s = with(&y);
    assert_eq!(
        reasons(&s, Kind::AuthPolicy, "default", "pw"),
        [Reason::SecretNotFound]
    );
    assert!(
        s.client("c")
            .is_some_and(|c| c.policy.users.as_ref().is_some_and(|u| u.is_empty()))
    );
}

#[test]
fn duplicate_objects_in_a_folder_are_reported_and_the_first_is_used() {
    let y = format!(
        "{}---\n{}",
        cred(
            "c",
            "{clientId: first, secretRef: {name: s}, policyRef: {name: acl}}"
        ),
        cred(
            "c",
            "{clientId: second, secretRef: {name: s}, policyRef: {name: acl}}"
        )
    );
    let s = with(&y);
    assert!(s.client("first").is_some() && s.client("second").is_none());
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "c"),
        [Reason::Duplicate]
    );
}

#[test]
fn certificate_only_policy_needs_a_binding_not_a_secret() {
    let y = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: certs}}\nspec: {{clientAuthMethods: [tls_client_auth]}}\n---\n{}---\n{}",
        cred(
            "bound",
            "{clientId: b, policyRef: {name: certs}, mtls: {subjectDn: CN=b}}"
        ),
        cred("unbound", "{clientId: u, policyRef: {name: certs}}"),
    );
    let s = with(&y);
    assert!(s.client("b").is_some_and(|c| c.verifiers.is_empty()));
    assert!(reasons(&s, Kind::Credential, "default", "bound").is_empty());
    assert_eq!(
        reasons(&s, Kind::Credential, "default", "unbound"),
        [Reason::Invalid]
    );
}

#[test]
fn an_invalid_object_never_stops_the_others() {
    let y = format!(
        "{}---\n{}---\napiVersion: tessera.dev/v1alpha1\nkind: Role\nmetadata: {{name: bad-role}}\nspec: {{scope: 'has space'}}\n",
        cred(
            "bad",
            "{clientId: 'has space', secretRef: {name: s}, policyRef: {name: acl}, claims: {sub: evil}}"
        ),
        cred(
            "good",
            "{clientId: good, secretRef: {name: s}, policyRef: {name: acl}, acl: [a]}"
        )
    );
    let s = with(&y);
    let bad = messages(&s, Kind::Credential, "default", "bad");
    assert!(
        bad.contains("spec.clientId") && bad.contains("spec.claims.sub"),
        "{bad}"
    );
    assert_eq!(
        reasons(&s, Kind::Role, "default", "bad-role"),
        [Reason::Invalid]
    );
    assert!(s.client("good").is_some());
    assert_eq!(s.counts().clients, 1);
}

#[test]
fn a_policy_ca_bundle_comes_from_its_configmap_or_secret_and_fails_closed_when_missing() {
    use tessera_crds::model::ClientCa;
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let y = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: cm}}\nspec: {{clientCa: {{configMapRef: {{name: bank-ca}}}}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bank-ca}}\ndata: {{ca.crt: '{}'}}\n---\napiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: sec}}\nspec: {{clientCa: {{secretRef: {{name: nope}}}}}}\n---\napiVersion: tessera.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {{name: key}}\nspec: {{clientCa: {{configMapRef: {{name: bank-ca, key: other.crt}}}}}}\n---\n{}---\n{}---\n{}",
        pem.replace('\n', "\\n"),
        cred(
            "a",
            "{clientId: a, secretRef: {name: s}, policyRef: {name: cm}}"
        ),
        cred(
            "b",
            "{clientId: b, secretRef: {name: s}, policyRef: {name: sec}}"
        ),
        cred(
            "c",
            "{clientId: c, secretRef: {name: s}, policyRef: {name: acl}}"
        ),
    );
    let s = with(
        &y.replace("'-----BEGIN", "\"-----BEGIN")
            .replace("-----\\n'", "-----\\n\""),
    );
    assert_eq!(
        s.client("a").expect("a").policy.client_ca,
        ClientCa::Pem(std::sync::Arc::from(pem))
    );
    assert_eq!(
        s.client("b")
            .expect("b still serves secrets")
            .policy
            .client_ca,
        ClientCa::Unavailable
    );
    assert_eq!(
        reasons(&s, Kind::AuthPolicy, "default", "sec"),
        [Reason::SecretNotFound]
    );
    assert_eq!(
        reasons(&s, Kind::AuthPolicy, "default", "key"),
        [Reason::SecretKeyNotFound]
    );
    assert_eq!(s.client("c").expect("c").policy.client_ca, ClientCa::Global);
}

#[test]
fn a_verifier_copied_into_another_credentials_status_verifies_nothing_there() {
    // The token server may patch credentials/status; a copied verifier must not let one
    // Credential's secret authenticate as another.
    let k = VerifierKey::new(KEY.to_vec());
    let a_verifier = k
        .verifier(
            &tessera_crds::secret::verifier_binding(Some("uid-a"), "Credential", "default", "a"),
            b"secret-of-a",
        )
        .to_published();
    let credential = |name: &str, uid: &str, client_id: &str| {
        format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: Credential\nmetadata: {{name: {name}, uid: {uid}}}\nspec: {{policyRef: {{name: acl}}}}\nstatus: {{clientId: {client_id}, secretVerifiers: [{{verifier: '{a_verifier}'}}]}}\n"
        )
    };
    let s = with(&format!(
        "{}---\n{}",
        credential("a", "uid-a", "client-a"),
        credential("b", "uid-b", "client-b")
    ));
    let a = s.client("client-a").expect("a");
    let b = s.client("client-b").expect("b");
    assert!(a.check_secret(&k, b"secret-of-a", now()), "the control");
    assert!(
        !b.check_secret(&k, b"secret-of-a", now()),
        "a's secret does not authenticate as b through a copied verifier"
    );
}
