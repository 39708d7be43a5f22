//! Every grant × token type × client authentication method, and what the tokens contain.

use crate::harness::*;
use serde_json::json;

#[tokio::test]
async fn client_credentials_jwt_for_every_algorithm_and_auth_method() {
    let h = Harness::new();
    for (id, secret, alg) in [
        ("es-client", "es-secret", "ES256"),
        ("rs-client", "rs-secret", "RS256"),
        ("ed-client", "ed-secret", "EdDSA"),
    ] {
        for method in ["basic", "post"] {
            let r = if method == "basic" {
                h.post(
                    "/oauth2/token",
                    "grant_type=client_credentials",
                    Some(&basic(id, secret)),
                )
                .await
            } else {
                h.cc("/oauth2/token", id, secret, &[]).await
            };
            assert_eq!(r.status, 200, "{id} {method}: {}", r.body);
            assert_eq!(r.headers["cache-control"], "no-store");
            assert_eq!(r.body["token_type"], "Bearer");
            let token = r.str("access_token");
            let header = jsonwebtoken::decode_header(&token).expect("header");
            assert_eq!(format!("{:?}", header.alg), alg);
            let c = h.verify_jwt(&token).await;
            assert_eq!(
                (
                    c["sub"].as_str(),
                    c["client_id"].as_str(),
                    c["iss"].as_str()
                ),
                (Some(id), Some(id), Some(ISSUER))
            );
            let ttl = r.body["expires_in"].as_i64().expect("expires_in");
            assert_eq!(
                c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat"),
                ttl
            );
            assert_eq!(c["nbf"], c["iat"]);
            assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 22));
        }
    }
}

#[tokio::test]
async fn tokens_carry_audiences_scopes_and_custom_claims() {
    let h = Harness::new();
    let r = h.cc("/credential/jwt", "es-client", "es-secret", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["scope"], "orders:read orders:write");
    assert_eq!(r.body["expires_in"], 600);
    let c = h.verify_jwt(&r.str("access_token")).await;
    assert_eq!(
        c["aud"],
        json!(["https://api.test/inventory", "https://api.test/orders"])
    );
    assert_eq!(c["scope"], "orders:read orders:write");
    assert_eq!(c["tenant"], "acme");
    // One audience is a string (RFC 7519 §4.1.3).
    let r = h.cc("/oauth2/token", "rs-client", "rs-secret", &[]).await;
    assert_eq!(
        h.verify_jwt(&r.str("access_token")).await["aud"],
        "https://api.test/orders"
    );
    assert!(
        r.body.get("refresh_token").is_none(),
        "the rs policy issues no refresh tokens"
    );
}

#[tokio::test]
async fn basic_auth_form_decodes_special_and_non_ascii_characters() {
    let h = Harness::new();
    let r = h
        .post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&basic(WEIRD_ID, WEIRD_SECRET)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        h.verify_jwt(&r.str("access_token")).await["client_id"],
        WEIRD_ID
    );
    // Without the form-encoding, `+` decodes to a space and `%c+` is invalid: authentication fails.
    use base64::Engine as _;
    let raw = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WEIRD_ID}:{WEIRD_SECRET}"))
    );
    let r = h
        .post("/oauth2/token", "grant_type=client_credentials", Some(&raw))
        .await;
    assert_eq!((r.status.as_u16(), r.error()), (401, "invalid_client"));
    // The same client with client_secret_post.
    let r = h.cc("/oauth2/token", WEIRD_ID, WEIRD_SECRET, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn opaque_tokens_from_the_oauth2_endpoints() {
    let h = Harness::new();
    let r = h
        .cc("/credential/token", "opaque-client", "opaque-secret", &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.str("access_token");
    assert!(t.starts_with("tat."), "{t}");
    assert_eq!(r.body["expires_in"], 3600);
    let i = h
        .post(
            "/oauth2/introspect",
            &form(&[("token", &t)]),
            Some(&basic("opaque-client", "opaque-secret")),
        )
        .await;
    assert_eq!(i.body["active"], true);
    assert_eq!(i.body["client_id"], "opaque-client");
    assert_eq!(i.body["scope"], "orders:read");
    // The JWT endpoint refuses an opaque policy's client, and the other way round.
    let r = h
        .cc("/credential/jwt", "opaque-client", "opaque-secret", &[])
        .await;
    assert_eq!(r.error(), "unauthorized_client");
    assert!(r.desc().contains("/credential/token"), "{}", r.desc());
    let r = h
        .cc("/credential/token", "es-client", "es-secret", &[])
        .await;
    assert_eq!(r.error(), "unauthorized_client");
}

#[tokio::test]
async fn password_grant_for_jwt_and_opaque_policies() {
    let h = Harness::new();
    for (path, id, secret) in [
        ("/credential/jwt", "es-client", "es-secret"),
        ("/credential/token", "opaque-client", "opaque-secret"),
    ] {
        let ok = form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
            ("scope", "orders:read"),
        ]);
        let r = h.post(path, &ok, Some(&basic(id, secret))).await;
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        assert_eq!(r.body["scope"], "orders:read");
        if path.ends_with("jwt") {
            assert_eq!(h.verify_jwt(&r.str("access_token")).await["sub"], "alice");
        }
        for (user, pw) in [("alice", "wrong"), ("mallory", ALICE_PASSWORD)] {
            let bad = form(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", pw),
            ]);
            let r = h.post(path, &bad, Some(&basic(id, secret))).await;
            assert_eq!(
                (r.status.as_u16(), r.error()),
                (400, "invalid_grant"),
                "{user}"
            );
            assert_eq!(
                r.desc(),
                "the username or password is wrong",
                "same answer for unknown users"
            );
        }
        let missing = form(&[("grant_type", "password"), ("username", "alice")]);
        assert_eq!(
            h.post(path, &missing, Some(&basic(id, secret)))
                .await
                .desc(),
            "missing parameter `password`"
        );
    }
    // A policy without the password grant.
    let r = h
        .post(
            "/oauth2/token",
            &form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
            ]),
            Some(&basic("rs-client", "rs-secret")),
        )
        .await;
    assert_eq!(r.error(), "unauthorized_client");
}

#[tokio::test]
async fn policy_managed_proxy_keys_and_the_dash_secret() {
    let h = Harness::new();
    let r = h
        .cc("/auth/jwt", "reports-key", "reports-secret", &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        h.verify_jwt(&r.str("access_token")).await["aud"],
        "https://api.test/reports"
    );
    // Password grant with client_secret `-`, as the gateway product documents.
    let pw = form(&[
        ("grant_type", "password"),
        ("client_id", "reports-key"),
        ("client_secret", "-"),
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
    ]);
    let r = h.post("/auth/jwt", &pw, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rt = r.str("refresh_token");
    let refresh = form(&[
        ("grant_type", "refresh_token"),
        ("client_id", "reports-key"),
        ("client_secret", "-"),
        ("refresh_token", &rt),
    ]);
    let r = h.post("/auth/jwt", &refresh, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.verify_jwt(&r.str("access_token")).await["sub"], "alice");
    // `-` never authenticates client_credentials, nor a Credential.
    assert_eq!(
        h.cc("/auth/jwt", "reports-key", "-", &[]).await.error(),
        "invalid_client"
    );
    let pw = form(&[
        ("grant_type", "password"),
        ("client_id", "es-client"),
        ("client_secret", "-"),
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
    ]);
    assert_eq!(
        h.post("/credential/jwt", &pw, None).await.error(),
        "invalid_client"
    );
    // Opaque proxy keys use /auth/token; proxy keys are not served on /credential/*.
    let r = h
        .cc("/auth/token", "ledger-key", "ledger-secret", &[])
        .await;
    assert!(r.str("access_token").starts_with("tat."));
    assert_eq!(
        h.cc("/credential/jwt", "reports-key", "reports-secret", &[])
            .await
            .error(),
        "unauthorized_client"
    );
    assert_eq!(
        h.cc("/auth/jwt", "es-client", "es-secret", &[])
            .await
            .error(),
        "unauthorized_client"
    );
}

#[tokio::test]
async fn scope_selection_reject_and_intersect() {
    let h = Harness::new();
    let r = h
        .cc(
            "/oauth2/token",
            "es-client",
            "es-secret",
            &[("scope", "orders:read")],
        )
        .await;
    assert_eq!(r.body["scope"], "orders:read");
    let r = h
        .cc(
            "/oauth2/token",
            "es-client",
            "es-secret",
            &[("scope", "orders:read admin")],
        )
        .await;
    assert_eq!((r.status.as_u16(), r.error()), (400, "invalid_scope"));
    assert!(r.desc().contains("admin"));
    // The ed policy intersects.
    let r = h
        .cc(
            "/oauth2/token",
            "ed-client",
            "ed-secret",
            &[("scope", "orders:read admin")],
        )
        .await;
    assert_eq!(r.body["scope"], "orders:read");
    assert_eq!(
        h.cc(
            "/oauth2/token",
            "ed-client",
            "ed-secret",
            &[("scope", "admin")]
        )
        .await
        .error(),
        "invalid_scope"
    );
    assert_eq!(
        h.cc(
            "/oauth2/token",
            "ed-client",
            "ed-secret",
            &[("scope", "bad\"scope")]
        )
        .await
        .error(),
        "invalid_scope"
    );
}

#[tokio::test]
async fn audience_selection_with_resource_and_audience() {
    let h = Harness::new();
    let r = h
        .cc(
            "/oauth2/token",
            "es-client",
            "es-secret",
            &[("resource", "https://api.test/orders")],
        )
        .await;
    assert_eq!(
        h.verify_jwt(&r.str("access_token")).await["aud"],
        "https://api.test/orders"
    );
    let r = h
        .cc(
            "/oauth2/token",
            "es-client",
            "es-secret",
            &[
                ("resource", "https://api.test/orders"),
                ("audience", "https://api.test/inventory"),
            ],
        )
        .await;
    assert_eq!(
        h.verify_jwt(&r.str("access_token")).await["aud"],
        json!(["https://api.test/inventory", "https://api.test/orders"])
    );
    let r = h
        .cc(
            "/oauth2/token",
            "es-client",
            "es-secret",
            &[("resource", "https://api.test/reports")],
        )
        .await;
    assert_eq!((r.status.as_u16(), r.error()), (400, "invalid_target"));
    let r = h.cc("/oauth2/token", "no-api", "rs-secret", &[]).await;
    assert_eq!(r.error(), "invalid_target");
    assert!(r.desc().contains("acl or roles"));
}

#[tokio::test]
async fn legacy_compatibility_get_parameters_immortal_tokens_and_renamed_fields() {
    let h = Harness::new();
    let r = h.get("/oauth2/token?grant_type=client_credentials&client_id=legacy-client&client_secret=legacy-secret").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let obj = r.body.as_object().expect("object");
    assert!(
        obj.contains_key("token")
            && !obj.contains_key("access_token")
            && !obj.contains_key("scope")
    );
    assert!(
        !obj.contains_key("expires_in"),
        "immortal tokens have no expiry"
    );
    let c = h.verify_jwt(obj["token"].as_str().expect("token")).await;
    assert!(c.get("exp").is_none());
    // Milliseconds for a mortal token: the es policy in a copy with expiresInUnit.
    let patched = FIXTURE.replace(
        "accessToken: {ttl: 10m}",
        "accessToken: {ttl: 10m}\n  tokenManagement: {expiresInUnit: Milliseconds}",
    );
    let h = Harness::with_files(&[("fixture.yaml", &patched)]);
    assert_eq!(
        h.cc("/oauth2/token", "es-client", "es-secret", &[])
            .await
            .body["expires_in"],
        600_000
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_limit_narrow_and_detect_reuse() {
    let h = Harness::new();
    let auth = basic("es-client", "es-secret");
    let first = h
        .post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&auth),
        )
        .await;
    let rt0 = first.str("refresh_token");
    let refresh = |rt: &str, extra: &[(&str, &str)]| {
        let mut p = vec![("grant_type", "refresh_token"), ("refresh_token", rt)];
        p.extend_from_slice(extra);
        form(&p)
    };
    // Narrowing works; widening does not.
    let wide = h
        .post(
            "/oauth2/token",
            &refresh(&rt0, &[("scope", "orders:read admin")]),
            Some(&auth),
        )
        .await;
    assert_eq!(wide.error(), "invalid_scope");
    let r1 = h
        .post(
            "/oauth2/token",
            &refresh(&rt0, &[("scope", "orders:read")]),
            Some(&auth),
        )
        .await;
    assert_eq!(r1.status, 200, "{}", r1.body);
    assert_eq!(r1.body["scope"], "orders:read");
    let c1 = h.verify_jwt(&r1.str("access_token")).await;
    assert_ne!(
        c1["jti"],
        h.verify_jwt(&first.str("access_token")).await["jti"]
    );
    let rt1 = r1.str("refresh_token");
    assert_ne!(rt1, rt0, "rotated");
    // Another client cannot use it.
    let r = h
        .post(
            "/oauth2/token",
            &refresh(&rt1, &[]),
            Some(&basic("ed-client", "ed-secret")),
        )
        .await;
    assert_eq!(
        r.error(),
        "unauthorized_client",
        "ed's policy has no refresh grant"
    );
    let r = h
        .post(
            "/oauth2/token",
            &refresh(&rt1, &[]),
            Some(&basic("reports-key", "reports-secret")),
        )
        .await;
    assert_eq!(
        (r.error(), r.desc()),
        (
            "invalid_grant",
            "the refresh token was issued to another client"
        )
    );
    // maxRefreshes: 2.
    let r2 = h
        .post("/oauth2/token", &refresh(&rt1, &[]), Some(&auth))
        .await;
    assert_eq!(r2.status, 200, "{}", r2.body);
    assert_eq!(
        r2.body["scope"], "orders:read",
        "the narrowed scope carries on"
    );
    let r3 = h
        .post(
            "/oauth2/token",
            &refresh(&r2.str("refresh_token"), &[]),
            Some(&auth),
        )
        .await;
    assert_eq!(r3.error(), "invalid_grant");
    assert!(r3.desc().contains("refresh limit"), "{}", r3.desc());
    // Reuse of a spent token revokes its chain.
    let fresh = h
        .post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&auth),
        )
        .await
        .str("refresh_token");
    let next = h
        .post("/oauth2/token", &refresh(&fresh, &[]), Some(&auth))
        .await
        .str("refresh_token");
    let reuse = h
        .post("/oauth2/token", &refresh(&fresh, &[]), Some(&auth))
        .await;
    assert!(reuse.desc().contains("already used"), "{}", reuse.desc());
    let after = h
        .post("/oauth2/token", &refresh(&next, &[]), Some(&auth))
        .await;
    assert!(
        after.desc().contains("revoked"),
        "the whole chain is revoked: {}",
        after.desc()
    );
    // Expiry (1h).
    let late = h
        .post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&auth),
        )
        .await
        .str("refresh_token");
    h.advance(3601);
    assert!(
        h.post("/oauth2/token", &refresh(&late, &[]), Some(&auth))
            .await
            .desc()
            .contains("expired")
    );
    // Garbage.
    assert_eq!(
        h.post("/oauth2/token", &refresh("trt.x.y", &[]), Some(&auth))
            .await
            .error(),
        "invalid_grant"
    );
    assert_eq!(
        h.post("/oauth2/token", "grant_type=refresh_token", Some(&auth))
            .await
            .desc(),
        "missing parameter `refresh_token`"
    );
}

#[tokio::test]
async fn non_rotating_refresh_tokens_are_reusable() {
    let h = Harness::new();
    let auth = basic("opaque-client", "opaque-secret");
    let rt = h
        .post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&auth),
        )
        .await
        .str("refresh_token");
    for _ in 0..3 {
        let r = h
            .post(
                "/oauth2/token",
                &form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]),
                Some(&auth),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.get("refresh_token").is_none(),
            "no new refresh token without rotation"
        );
    }
}

#[tokio::test]
async fn a_refreshed_token_is_signed_with_the_current_key_and_old_tokens_stay_valid() {
    let h = Harness::new();
    let auth = basic("es-client", "es-secret");
    let first = h
        .post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&auth),
        )
        .await;
    let old_kid = jsonwebtoken::decode_header(first.str("access_token"))
        .expect("h")
        .kid
        .expect("kid");
    // Rotate: a new key set whose newer ES256 key signs from now; the old key stays published.
    let keys_text = std::fs::read_to_string(h.path().join("keys.yaml")).expect("keys");
    let json = keys_text
        .split("keyset.json: '")
        .nth(1)
        .and_then(|s| s.strip_suffix("'\n"))
        .expect("json");
    let mut file: tessera_token_server::token::keys::KeySetFile =
        serde_json::from_str(json).expect("parse");
    let mut new_key =
        tessera_token_server::token::keys::KeySet::generate_file(jiff::Timestamp::now())
            .expect("gen")
            .signing
            .remove(1);
    new_key.kid = "es256-rotated".into();
    new_key.active_from = jiff::Timestamp::now();
    file.signing.push(new_key);
    std::fs::write(h.path().join("keys.yaml"), keys_manifest(&file)).expect("write");
    h.reload().expect("reload");
    let r = h
        .post(
            "/oauth2/token",
            &form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &first.str("refresh_token")),
            ]),
            Some(&auth),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_kid = jsonwebtoken::decode_header(r.str("access_token"))
        .expect("h")
        .kid
        .expect("kid");
    assert_eq!(new_kid, "es256-rotated");
    assert_ne!(new_kid, old_kid);
    // The token signed before the rotation still verifies against the JWKS.
    h.verify_jwt(&first.str("access_token")).await;
}

#[tokio::test]
async fn discovery_and_jwks() {
    let h = Harness::new();
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let d = h.get(path).await;
        assert_eq!(d.status, 200);
        assert_eq!(d.body["issuer"], ISSUER);
        assert_eq!(d.body["token_endpoint"], format!("{ISSUER}/oauth2/token"));
        assert_eq!(
            d.body["jwks_uri"],
            format!("{ISSUER}/.well-known/jwks.json")
        );
        assert_eq!(
            d.body["grant_types_supported"],
            json!(["client_credentials", "password", "refresh_token"])
        );
    }
    let j = h.get("/.well-known/jwks.json").await;
    assert_eq!(j.headers["cache-control"], "public, max-age=60");
    let keys = j.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 3);
    for k in keys {
        assert!(
            k.get("d").is_none() && k.get("p").is_none(),
            "no private parts: {k}"
        );
        assert_eq!(k["use"], "sig");
    }
}

/// The full matrix: every grant, with a JWT and an opaque policy, with Basic and with the form.
#[tokio::test]
async fn every_grant_token_type_and_auth_method() {
    let harness = Harness::new();
    let h = &harness;
    for (id, secret, opaque) in [
        ("es-client", "es-secret", false),
        ("opaque-client", "opaque-secret", true),
    ] {
        for basic_auth in [true, false] {
            let send = move |params: Vec<(&'static str, String)>| {
                let mut p: Vec<(&str, &str)> =
                    params.iter().map(|(k, v)| (*k, v.as_str())).collect();
                if !basic_auth {
                    p.push(("client_id", id));
                    p.push(("client_secret", secret));
                }
                let body = form(&p);
                let auth = basic_auth.then(|| basic(id, secret));
                async move { h.post("/oauth2/token", &body, auth.as_deref()).await }
            };
            let cc = send(vec![("grant_type", "client_credentials".into())]).await;
            let pw = send(vec![
                ("grant_type", "password".into()),
                ("username", "alice".into()),
                ("password", ALICE_PASSWORD.into()),
            ])
            .await;
            let rf = send(vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", cc.str("refresh_token")),
            ])
            .await;
            for (grant, r) in [
                ("client_credentials", &cc),
                ("password", &pw),
                ("refresh_token", &rf),
            ] {
                let label = format!("{id} basic={basic_auth} {grant}");
                assert_eq!(r.status, 200, "{label}: {}", r.body);
                let token = r.str("access_token");
                if opaque {
                    assert!(token.starts_with("tat."), "{label}");
                    let i = h
                        .post(
                            "/oauth2/introspect",
                            &form(&[("token", &token)]),
                            Some(&basic(id, secret)),
                        )
                        .await;
                    assert_eq!(i.body["active"], true, "{label}");
                } else {
                    let c = h.verify_jwt(&token).await;
                    let sub = if grant == "client_credentials" {
                        id
                    } else if grant == "password" {
                        "alice"
                    } else {
                        id
                    };
                    assert_eq!(c["sub"], sub, "{label}");
                }
            }
        }
    }
}

/// Discovery tells only what the served policies offer: one policy with client_credentials and
/// the default secret methods, ES256; nothing about ID tokens, assertions or certificates.
#[tokio::test]
async fn discovery_lists_only_what_is_configured() {
    let h = Harness::with_files(&[(
        "m.yaml",
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: only-cc}
spec: {signingAlgorithm: ES256}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: orders}
spec: {audience: "https://api.test/orders", basePath: /orders}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: app}
spec: {clientId: app, secretRef: {name: s}, policyRef: {name: only-cc}, acl: [orders]}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {client_secret: app-secret}
"#,
    )]);
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let d = h.get(path).await.body;
        assert_eq!(d["issuer"], ISSUER);
        assert_eq!(
            d["grant_types_supported"],
            serde_json::json!(["client_credentials"])
        );
        assert_eq!(
            d["token_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic", "client_secret_post"])
        );
        assert_eq!(
            d["access_token_signing_alg_values_supported"],
            serde_json::json!(["ES256"])
        );
        for absent in [
            "id_token_signing_alg_values_supported",
            "subject_types_supported",
            "token_endpoint_auth_signing_alg_values_supported",
            "tls_client_certificate_bound_access_tokens",
        ] {
            assert!(d.get(absent).is_none(), "{path}: {absent} in {d}");
        }
        assert_eq!(d["response_types_supported"], serde_json::json!([]));
    }
}
