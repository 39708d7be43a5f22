//! RFC 7662 introspection (who may learn what) and RFC 7009 revocation.

use crate::harness::*;

async fn introspect(h: &Harness, token: &str, id: &str, secret: &str) -> Resp {
    h.post(
        "/oauth2/introspect",
        &form(&[("token", token)]),
        Some(&basic(id, secret)),
    )
    .await
}

#[tokio::test]
async fn owners_and_gateways_of_the_audience_learn_about_a_token_others_do_not() {
    let h = Harness::new();
    let t = h
        .cc("/oauth2/token", "opaque-client", "opaque-secret", &[])
        .await
        .str("access_token");
    let own = introspect(&h, &t, "opaque-client", "opaque-secret").await;
    assert_eq!(own.body["active"], true);
    assert_eq!(own.body["aud"], "https://api.test/orders");
    assert_eq!(own.body["token_type"], "Bearer");
    assert_eq!(own.headers["cache-control"], "no-store");
    let gw = introspect(&h, &t, "orders-gateway", "gateway-secret").await;
    assert_eq!(
        gw.body["active"], true,
        "the orders gateway serves the token's audience"
    );
    let other = introspect(&h, &t, "stranger", "stranger-secret").await;
    assert_eq!(
        other.body,
        serde_json::json!({"active": false}),
        "another client learns nothing"
    );
    // JWTs are introspected too.
    let jwt = h
        .cc("/oauth2/token", "es-client", "es-secret", &[])
        .await
        .str("access_token");
    let r = introspect(&h, &jwt, "es-client", "es-secret").await;
    assert_eq!(
        (r.body["active"].as_bool(), r.body["tenant"].as_str()),
        (Some(true), Some("acme"))
    );
    assert_eq!(
        introspect(&h, &jwt, "orders-gateway", "gateway-secret")
            .await
            .body["active"],
        true
    );
    // Garbage and tampering.
    for junk in [
        "",
        "x",
        "tat.a.b",
        "a.b.c",
        &format!("{}x", &jwt[..jwt.len() - 2]),
    ] {
        let r = h
            .post(
                "/oauth2/introspect",
                &format!("token={junk}"),
                Some(&basic("es-client", "es-secret")),
            )
            .await;
        if junk.is_empty() {
            assert_eq!(r.error(), "invalid_request");
        } else {
            assert_eq!(r.body["active"], false, "{junk:.20}");
        }
    }
}

#[tokio::test]
async fn expiry_and_credential_changes_make_tokens_inactive() {
    let h = Harness::new();
    let jwt = h
        .cc("/oauth2/token", "es-client", "es-secret", &[])
        .await
        .str("access_token");
    let opaque = h
        .cc("/oauth2/token", "opaque-client", "opaque-secret", &[])
        .await
        .str("access_token");
    h.advance(601);
    assert_eq!(
        introspect(&h, &jwt, "es-client", "es-secret").await.body["active"],
        false,
        "10 minute JWT"
    );
    assert_eq!(
        introspect(&h, &opaque, "opaque-client", "opaque-secret")
            .await
            .body["active"],
        true,
        "1 hour opaque"
    );
    // Disabling the Credential deactivates its tokens at once.
    let text = std::fs::read_to_string(h.path().join("fixture.yaml")).expect("read");
    let disabled = text.replace(
        "policyRef: {name: opaque}, acl: [orders], roles: [orders-read]}",
        "policyRef: {name: opaque}, acl: [orders], roles: [orders-read], disabled: true}",
    );
    assert_ne!(text, disabled);
    std::fs::write(h.path().join("fixture.yaml"), disabled).expect("write");
    h.reload().expect("reload");
    assert_eq!(
        introspect(&h, &opaque, "orders-gateway", "gateway-secret")
            .await
            .body["active"],
        false
    );
    assert_eq!(
        h.cc("/oauth2/token", "opaque-client", "opaque-secret", &[])
            .await
            .error(),
        "invalid_client"
    );
}

#[tokio::test]
async fn refresh_tokens_are_introspected_only_by_their_client() {
    let h = Harness::new();
    let r = h
        .post(
            "/oauth2/token",
            &form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
            ]),
            Some(&basic("opaque-client", "opaque-secret")),
        )
        .await;
    let rt = r.str("refresh_token");
    let own = introspect(&h, &rt, "opaque-client", "opaque-secret").await;
    assert_eq!(
        (
            own.body["active"].as_bool(),
            own.body["token_type"].as_str(),
            own.body["username"].as_str()
        ),
        (Some(true), Some("refresh_token"), Some("alice"))
    );
    assert_eq!(
        introspect(&h, &rt, "orders-gateway", "gateway-secret")
            .await
            .body["active"],
        false
    );
}

#[tokio::test]
async fn revocation() {
    let h = Harness::new();
    let auth = basic("es-client", "es-secret");
    let first = h
        .post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&auth),
        )
        .await;
    let rt = first.str("refresh_token");
    // Another client cannot revoke it.
    let r = h
        .post(
            "/oauth2/revoke",
            &form(&[("token", &rt)]),
            Some(&basic("ed-client", "ed-secret")),
        )
        .await;
    assert_eq!(r.error(), "unauthorized_client");
    let r = h
        .post(
            "/oauth2/revoke",
            &form(&[("token", &rt), ("token_type_hint", "refresh_token")]),
            Some(&auth),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["cache-control"], "no-store");
    let again = h
        .post(
            "/oauth2/token",
            &form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]),
            Some(&auth),
        )
        .await;
    assert!(again.desc().contains("revoked"), "{}", again.desc());
    // An access token: introspection then says inactive.
    let at = first.str("access_token");
    assert_eq!(
        h.post("/oauth2/revoke", &form(&[("token", &at)]), Some(&auth))
            .await
            .status,
        200
    );
    assert_eq!(
        introspect(&h, &at, "es-client", "es-secret").await.body["active"],
        false
    );
    // Unknown tokens are 200; a bad hint and GET are not.
    assert_eq!(
        h.post("/oauth2/revoke", "token=nonsense", Some(&auth))
            .await
            .status,
        200
    );
    assert_eq!(
        h.post(
            "/oauth2/revoke",
            "token=x&token_type_hint=id_token",
            Some(&auth)
        )
        .await
        .error(),
        "invalid_request"
    );
    assert_eq!(h.get("/oauth2/revoke?token=x").await.status, 405);
    assert_eq!(
        h.post(
            "/oauth2/revoke",
            "token=x",
            Some(&basic("es-client", "nope"))
        )
        .await
        .status,
        401
    );
}

/// Re-signs the payload of `jwt` with the ES256 key it was signed with, under a header naming
/// `alg`: what a holder of the key (or a confused client) could produce.
fn resign(h: &Harness, jwt: &str, alg: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let served = h.state.served.load_full().expect("served");
    let key = served
        .keys
        .signer(
            tessera_crds::auth_policy::SigningAlgorithm::ES256,
            jiff::Timestamp::now(),
        )
        .expect("an ES256 key");
    let header = serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": key.kid}).to_string();
    let payload = jwt.split('.').nth(1).expect("payload");
    let input = format!("{}.{payload}", URL_SAFE_NO_PAD.encode(header));
    let sig = key.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn the_key_decides_the_algorithm_not_the_header() {
    let h = Harness::new();
    let jwt = h
        .cc("/oauth2/token", "es-client", "es-secret", &[])
        .await
        .str("access_token");
    // The control: re-signed under its own algorithm, the token is good.
    let same = resign(&h, &jwt, "ES256");
    assert_eq!(
        introspect(&h, &same, "es-client", "es-secret").await.body["active"],
        true
    );
    for alg in ["RS256", "EdDSA"] {
        let forged = resign(&h, &jwt, alg);
        assert_eq!(
            introspect(&h, &forged, "es-client", "es-secret").await.body,
            serde_json::json!({"active": false}),
            "an ES256 signature under `alg: {alg}`"
        );
    }
}

#[tokio::test]
async fn calling_an_api_does_not_let_a_client_read_other_clients_tokens_for_it() {
    let h = Harness::new();
    let t = h
        .cc("/oauth2/token", "opaque-client", "opaque-secret", &[])
        .await
        .str("access_token");
    // rs-client may call the orders API too: before, that let it read opaque-client's claims.
    assert_eq!(
        introspect(&h, &t, "rs-client", "rs-secret").await.body,
        serde_json::json!({"active": false})
    );
    // The declared resource server of the API does see it.
    assert_eq!(
        introspect(&h, &t, "orders-gateway", "gateway-secret")
            .await
            .body["active"],
        true
    );
    // A proxy key is its API's identity: it introspects tokens for that API.
    let reports = h
        .post(
            "/auth/jwt",
            &form(&[
                ("grant_type", "password"),
                ("client_id", "reports-key"),
                ("client_secret", "-"),
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
            ]),
            None,
        )
        .await
        .str("access_token");
    assert_eq!(
        introspect(&h, &reports, "reports-key", "reports-secret")
            .await
            .body["active"],
        true
    );
    assert_eq!(
        introspect(&h, &reports, "orders-gateway", "gateway-secret")
            .await
            .body["active"],
        false,
        "the orders gateway serves another API"
    );
}
