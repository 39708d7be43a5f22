//! Every folder under `examples/` resolves through the model with no problem, and resolves to
//! the clients, audiences and scopes its README describes.

use std::path::{Path, PathBuf};
use tessera_crds::auth_policy::{GrantType, SigningAlgorithm, TokenType};
use tessera_crds::manifest;
use tessera_crds::model::{self, Client, ClientKind, ResourceSet, Snapshot};
use tessera_crds::secret::VerifierKey;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn load(folder: &str) -> Snapshot {
    let dir = examples_dir().join(folder);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut set = ResourceSet::default();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        let parsed =
            manifest::parse(&text, &f.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        // A workload's own objects are skipped by design; anything else is a typo.
        assert!(
            parsed
                .skipped
                .iter()
                .all(|k| k == "v1/ServiceAccount" || k == "apps/v1/Deployment"),
            "{}: unexpected kinds {:?}",
            f.display(),
            parsed.skipped
        );
        parsed.resources.into_iter().for_each(|r| set.push(r));
    }
    let snap = model::resolve(
        &set,
        &VerifierKey::new(vec![7u8; 32]),
        jiff::Timestamp::now(),
    );
    let problems: Vec<String> = snap
        .report()
        .with_problems()
        .into_iter()
        .map(|(o, p)| format!("{o}: {p:?}"))
        .collect();
    assert!(
        problems.is_empty(),
        "example {folder} has problems: {problems:#?}"
    );
    snap
}

fn client<'a>(snap: &'a Snapshot, id: &str) -> &'a Client {
    snap.client(id)
        .unwrap_or_else(|| panic!("client {id} missing"))
}

fn strs(v: &[std::sync::Arc<str>]) -> Vec<&str> {
    v.iter().map(|s| &**s).collect()
}

fn authenticates(c: &Client, secret: &str) -> bool {
    c.check_secret(
        &VerifierKey::new(vec![7u8; 32]),
        secret.as_bytes(),
        jiff::Timestamp::now(),
    )
}

#[test]
fn every_example_folder_is_covered_here() {
    let mut found: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/")
        .map(|e| e.expect("entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let covered = [
        "client-credentials-jwt",
        "custom-claims",
        "legacy-gateway-compat",
        "mtls-bound",
        "opaque-introspection",
        "password-grant",
        "policy-managed-proxy",
        "quickstart",
        "refresh-tokens",
        "scopes-from-roles",
        "service-account-client",
    ];
    assert_eq!(found, covered, "add a test for each new example folder");
    for f in covered {
        assert!(
            examples_dir().join(f).join("README.md").is_file(),
            "{f} needs a README.md"
        );
    }
}

#[test]
fn service_account_client() {
    let s = load("service-account-client");
    let c = client(&s, "stock-sync");
    assert_eq!(
        c.service_account,
        Some(("warehouse".to_owned(), "stock-sync".to_owned()))
    );
    assert!(
        c.verifiers.is_empty(),
        "secretless: no secret authenticates it"
    );
    assert!(!authenticates(c, ""));
    assert!(
        c.policy
            .allows_auth(tessera_crds::auth_policy::ClientAuthMethod::PrivateKeyJwt)
    );
    assert_eq!(strs(&c.audiences), ["https://api.example.com/stock"]);
}

#[test]
fn quickstart() {
    let s = load("quickstart");
    assert_eq!(s.counts().clients, 1);
    let c = client(&s, "demo-app");
    assert_eq!(c.kind, ClientKind::Credential);
    assert_eq!(
        strs(&c.audiences),
        [
            "https://api.example.com/inventory",
            "https://api.example.com/orders"
        ]
    );
    assert_eq!(strs(&c.scopes), ["orders:read"]);
    assert_eq!(c.claims.get("tenant").map(String::as_str), Some("acme"));
    assert!(authenticates(c, "demo-secret-change-me"));
    assert!(!authenticates(c, "demo-secret-change-me "));
    let p = &c.policy;
    assert_eq!(p.algorithm, SigningAlgorithm::ES256);
    assert_eq!(p.access_ttl.map(|d| d.as_secs()), Some(900));
    assert_eq!(p.refresh.map(|r| r.ttl.as_secs()), Some(8 * 3600));
    assert!(p.allows_grant(GrantType::Password) && p.allows_grant(GrantType::RefreshToken));
    let users = p.users.as_ref().expect("user pool");
    assert_eq!(users.len(), 2);
    assert!(
        users
            .hash_of("alice")
            .is_some_and(|h| h.starts_with("$argon2id$"))
    );
}

#[test]
fn client_credentials_jwt() {
    let s = load("client-credentials-jwt");
    let c = client(&s, "invoice-worker");
    assert_eq!(&*c.owner.namespace, "billing");
    assert_eq!(
        strs(&c.audiences),
        [
            "https://api.example.com/invoices",
            "https://api.example.com/payouts"
        ]
    );
    assert!(c.scopes.is_empty());
    assert!(authenticates(c, "invoice-worker-demo-secret"));
    assert_eq!(c.policy.grant_types, [GrantType::ClientCredentials]);
    assert_eq!(c.policy.access_ttl.map(|d| d.as_secs()), Some(600));
}

#[test]
fn policy_managed_proxy() {
    let s = load("policy-managed-proxy");
    let c = client(&s, "payments-proxy-key");
    assert_eq!(c.kind, ClientKind::ProxyKey);
    assert_eq!(&*c.owner.name, "payments");
    assert_eq!(strs(&c.audiences), ["https://api.example.com/payments"]);
    assert!(authenticates(c, "payments-proxy-demo-secret"));
    assert!(
        c.policy
            .users
            .as_ref()
            .is_some_and(|u| u.hash_of("bob").is_some())
    );
}

#[test]
fn password_grant() {
    let s = load("password-grant");
    let c = client(&s, "hr-portal");
    assert_eq!(c.policy.grant_types, [GrantType::Password]);
    assert_eq!(strs(&c.audiences), ["https://api.example.com/hr"]);
    assert_eq!(c.policy.users.as_ref().map(|u| u.len()), Some(2));
}

#[test]
fn refresh_tokens() {
    let s = load("refresh-tokens");
    let r = client(&s, "report-runner")
        .policy
        .refresh
        .expect("refresh enabled");
    assert_eq!(
        (r.ttl.as_secs(), r.rotate, r.max_refreshes),
        (12 * 3600, true, Some(20))
    );
}

#[test]
fn scopes_from_roles() {
    let s = load("scopes-from-roles");
    let c = client(&s, "merchandiser");
    assert_eq!(strs(&c.scopes), ["catalog:read", "catalog:write"]);
    assert_eq!(
        strs(&c.audiences),
        [
            "https://api.example.com/catalog",
            "https://api.example.com/catalog-admin"
        ]
    );
    assert!(c.holds_scope("catalog:write") && !c.holds_scope("catalog:delete"));
}

#[test]
fn custom_claims() {
    let s = load("custom-claims");
    let c = client(&s, "acme-partner");
    let claims: Vec<_> = c
        .claims
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        claims,
        [("region", "eu-west"), ("tenant", "acme"), ("tier", "gold")]
    );
    assert_eq!(c.policy.algorithm, SigningAlgorithm::EdDSA);
}

#[test]
fn opaque_introspection() {
    let s = load("opaque-introspection");
    assert_eq!(
        client(&s, "ledger-client").policy.token_type,
        TokenType::OAuth2
    );
    assert!(client(&s, "ledger-gateway").may_call("https://api.example.com/ledger"));
    assert_eq!(
        s.audience_owner("https://api.example.com/ledger")
            .map(|o| &*o.name),
        Some("ledger")
    );
}

#[test]
fn mtls_bound() {
    let s = load("mtls-bound");
    let c = client(&s, "settlement-bank");
    assert!(
        c.verifiers.is_empty(),
        "a certificate-only client has no secret"
    );
    let m = c.mtls.as_ref().expect("binding");
    assert_eq!(
        m.subject_dn.as_deref(),
        Some("CN=settlement-bank,O=Example Bank")
    );
}

#[test]
fn legacy_gateway_compat() {
    let s = load("legacy-gateway-compat");
    let p = &client(&s, "legacy-client").policy;
    assert_eq!(p.access_ttl, None, "immortal");
    assert!(p.allow_url_parameters);
    assert!(!p.token_management.return_scope);
    assert_eq!(
        p.token_management.response_fields.access_token.as_deref(),
        Some("token")
    );
}
