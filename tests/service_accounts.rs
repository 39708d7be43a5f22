//! Clients without secrets, in the cluster: a workload's projected ServiceAccount token (minted
//! here with TokenRequest on the real control plane) is its client assertion. The token server
//! verifies it against the cluster's service-account issuer; the token it issues is checked
//! against the published JWKS with jsonwebtoken.

use serde_json::Value;
use std::time::Duration;
use tessera_e2e::*;

const ISSUER: &str = "http://tessera.test";
const TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn manifests() -> &'static str {
    r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: workloads}
spec: {signingAlgorithm: ES256, clientAuthMethods: [private_key_jwt]}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: ledger}
spec: {audience: "https://api.test/ledger", basePath: /ledger}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: ledger-sync}
spec: {clientId: ledger-sync, policyRef: {name: workloads}, acl: [ledger], serviceAccount: {name: ledger-sync}}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: reviewed}
spec: {signingAlgorithm: ES256, clientAuthMethods: [private_key_jwt], serviceAccountVerification: TokenReview}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: reviewed-job}
spec: {clientId: reviewed-job, policyRef: {name: reviewed}, acl: [ledger], serviceAccount: {name: reviewed-job}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: keys-only-job}
spec: {clientId: keys-only-job, policyRef: {name: workloads}, acl: [ledger], serviceAccount: {name: keys-only-job}}
"#
}

/// A client_credentials request with `t` as the assertion, no client_id.
fn assertion(t: &str) -> [(&'static str, &str); 3] {
    [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", TYPE),
        ("client_assertion", t),
    ]
}

async fn token(http: &reqwest::Client, r: &Replica, form: &[(&str, &str)]) -> Answer {
    let resp = http
        .post(r.url("/oauth2/token"))
        .form(form)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    Answer {
        status,
        body: resp.json().await.unwrap_or(Value::Null),
    }
}

#[tokio::test]
async fn a_service_account_token_authenticates_the_credential_that_binds_it() {
    let cluster = Cluster::connect("sa").await;
    let (app, other, sys) = (
        cluster.namespace("app").await,
        cluster.namespace("other").await,
        cluster.namespace("sys").await,
    );
    // The key set, as the operator would have written it.
    let keys = std::process::Command::new(bin("token-server"))
        .args(["generate-keys", "--namespace", &sys])
        .output()
        .expect("generate-keys");
    for r in tessera_crds::manifest::parse(&String::from_utf8_lossy(&keys.stdout), "keys.yaml")
        .expect("keys manifest")
        .resources
    {
        create(&cluster.admin, &sys, r).await;
    }
    for r in tessera_crds::manifest::parse(manifests(), "m.yaml")
        .expect("manifests")
        .resources
    {
        create(&cluster.admin, &app, r).await;
    }
    for (ns, sa) in [
        (&app, "ledger-sync"),
        (&app, "stranger"),
        (&other, "ledger-sync"),
        (&app, "reviewed-job"),
        (&app, "keys-only-job"),
    ] {
        service_account(&cluster, ns, sa).await;
    }
    let replica = spawn_replica(
        &cluster,
        &cluster.admin_kubeconfig(),
        0,
        &format!("{app},{other}"),
        &sys,
        ISSUER,
    );
    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(60),
        "the token server is ready",
        || async { get_json(&http, &replica.admin_url("/readyz")).await.status == 200 },
    )
    .await;

    // The workload's token, no client_id and no secret: the token names its ServiceAccount.
    let sa = sa_token(&cluster, &app, "ledger-sync", ISSUER).await;
    let ok = token(
        &http,
        &replica,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", TYPE),
            ("client_assertion", &sa),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // An independent validator accepts the access token (JWKS over HTTP, jsonwebtoken).
    let access = ok.str("access_token");
    let header = jsonwebtoken::decode_header(&access).expect("header");
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(
        get_json(&http, &replica.url("/.well-known/jwks.json"))
            .await
            .body,
    )
    .expect("jwks");
    let key = jsonwebtoken::DecodingKey::from_jwk(
        jwks.find(header.kid.as_deref().expect("kid"))
            .expect("published"),
    )
    .expect("key");
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&["https://api.test/ledger"]);
    v.set_issuer(&[ISSUER]);
    let claims = jsonwebtoken::decode::<Value>(&access, &key, &v)
        .expect("valid")
        .claims;
    assert_eq!(claims["client_id"], "ledger-sync");
    // With the matching client_id too.
    let with_id = token(
        &http,
        &replica,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "ledger-sync"),
            ("client_assertion_type", TYPE),
            ("client_assertion", &sa),
        ],
    )
    .await;
    assert_eq!(with_id.status, 200, "{}", with_id.body);

    // Every bad token is invalid_client, naming why.
    let wrong_audience = sa_token(&cluster, &app, "ledger-sync", "https://elsewhere.test").await;
    let stranger = sa_token(&cluster, &app, "stranger", ISSUER).await;
    let other_ns = sa_token(&cluster, &other, "ledger-sync", ISSUER).await;
    let mut tampered = sa.clone();
    tampered.pop();
    tampered.push(if sa.ends_with('A') { 'B' } else { 'A' });
    let cases = [
        (wrong_audience.as_str(), None, "audience"),
        (stranger.as_str(), None, "binds this ServiceAccount"),
        (other_ns.as_str(), None, "binds this ServiceAccount"),
        (tampered.as_str(), None, "signature"),
        (sa.as_str(), Some("someone-else"), "another client"),
    ];
    for (t, id, says) in cases {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_assertion_type", TYPE),
            ("client_assertion", t),
        ];
        if let Some(id) = id {
            form.push(("client_id", id));
        }
        let r = token(&http, &replica, &form).await;
        assert_eq!(r.status, 401, "{says}: {}", r.body);
        assert_eq!(r.body["error"], "invalid_client");
        assert!(
            r.body["error_description"]
                .as_str()
                .is_some_and(|d| d.contains(says)),
            "{says}: {}",
            r.body
        );
    }
    // A secret as well: two methods.
    let both = token(
        &http,
        &replica,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "ledger-sync"),
            ("client_secret", "x"),
            ("client_assertion_type", TYPE),
            ("client_assertion", &sa),
        ],
    )
    .await;
    assert_eq!(both.status, 400, "{}", both.body);

    // TokenReview (the policy's choice) against the keys alone: the ServiceAccount is deleted;
    // its tokens still carry a valid signature until they expire.
    let reviewed = sa_token(&cluster, &app, "reviewed-job", ISSUER).await;
    let keys_only = sa_token(&cluster, &app, "keys-only-job", ISSUER).await;
    for t in [&reviewed, &keys_only] {
        assert_eq!(token(&http, &replica, &assertion(t)).await.status, 200);
    }
    for sa in ["reviewed-job", "keys-only-job"] {
        let req = http::Request::delete(format!("/api/v1/namespaces/{app}/serviceaccounts/{sa}"))
            .body(Vec::new())
            .expect("request");
        let _: Value = cluster
            .admin
            .request(req)
            .await
            .expect("delete ServiceAccount");
    }
    // The API server caches a successful token authentication for 10 s: the refusal comes
    // within that.
    let mut r = token(&http, &replica, &assertion(&reviewed)).await;
    let deleted = std::time::Instant::now();
    while r.status == 200 && deleted.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = token(&http, &replica, &assertion(&reviewed)).await;
    }
    eprintln!(
        "TokenReview refused the deleted ServiceAccount's token after {:?}",
        deleted.elapsed()
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("TokenReview")),
        "{}",
        r.body
    );
    assert_eq!(
        token(&http, &replica, &assertion(&keys_only)).await.status,
        200,
        "the keys alone cannot tell a deleted ServiceAccount (the README says so)"
    );
    cluster.cleanup().await;
}
