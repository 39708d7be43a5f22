//! Every RFC 6749 §5.2 error, and the bad inputs: each a JSON error with `Cache-Control: no-store`.

use crate::harness::*;
use axum::body::Body;
use axum::http::Request;

#[track_caller]
fn is_error(r: &Resp, status: u16, code: &str, fragment: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.error(), code, "{}", r.body);
    assert!(
        r.desc().contains(fragment),
        "`{}` lacks `{fragment}`",
        r.desc()
    );
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["content-type"], "application/json");
}

#[tokio::test]
async fn invalid_request() {
    let h = Harness::new();
    let auth = basic("es-client", "es-secret");
    is_error(
        &h.post("/oauth2/token", "scope=a", Some(&auth)).await,
        400,
        "invalid_request",
        "missing parameter `grant_type`",
    );
    is_error(
        &h.post(
            "/oauth2/token",
            "grant_type=client_credentials&grant_type=password",
            Some(&auth),
        )
        .await,
        400,
        "invalid_request",
        "more than once",
    );
    is_error(
        &h.post(
            "/oauth2/token",
            "grant_type=client_credentials&scope=%zz",
            Some(&auth),
        )
        .await,
        400,
        "invalid_request",
        "two hex digits",
    );
    is_error(
        &h.post(
            "/oauth2/token",
            "grant_type=client_credentials&scope=%C3%28",
            Some(&auth),
        )
        .await,
        400,
        "invalid_request",
        "not UTF-8",
    );
    let both = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "es-client"),
        ("client_secret", "es-secret"),
    ]);
    is_error(
        &h.post("/oauth2/token", &both, Some(&auth)).await,
        400,
        "invalid_request",
        "use one method",
    );
    let json = Request::post("/oauth2/token")
        .header("content-type", "application/json")
        .header("authorization", &auth)
        .body(Body::from("{\"grant_type\":\"client_credentials\"}"))
        .expect("req");
    is_error(
        &h.send(json).await,
        400,
        "invalid_request",
        "application/x-www-form-urlencoded",
    );
    let none = Request::post("/oauth2/token")
        .header("authorization", &auth)
        .body(Body::from("grant_type=client_credentials"))
        .expect("req");
    is_error(&h.send(none).await, 400, "invalid_request", "Content-Type");
    let query = Request::post("/oauth2/token?client_secret=x")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", &auth)
        .body(Body::from("grant_type=client_credentials"))
        .expect("req");
    is_error(
        &h.send(query).await,
        400,
        "invalid_request",
        "not accepted with POST",
    );
    // GET where the policy does not allow URL parameters: refused after authentication.
    is_error(&h.get("/oauth2/token?grant_type=client_credentials&client_id=es-client&client_secret=es-secret").await, 400, "invalid_request", "does not allow URL parameters");
    let put = Request::put("/oauth2/token")
        .body(Body::empty())
        .expect("req");
    let r = h.send(put).await;
    assert_eq!(r.status, 405);
    assert!(r.headers.contains_key("allow"));
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let h = Harness::new();
    let big = format!("grant_type=client_credentials&scope={}", "a".repeat(20_000));
    let r = h
        .post(
            "/oauth2/token",
            &big,
            Some(&basic("es-client", "es-secret")),
        )
        .await;
    is_error(&r, 413, "invalid_request", "larger than 16384 bytes");
    let long_query = format!(
        "/oauth2/token?grant_type=client_credentials&x={}",
        "a".repeat(20_000)
    );
    assert_eq!(h.get(&long_query).await.status, 413);
}

#[tokio::test]
async fn invalid_client() {
    let h = Harness::new();
    let r = h
        .post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&basic("es-client", "wrong")),
        )
        .await;
    is_error(&r, 401, "invalid_client", "client authentication failed");
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .is_ok_and(|v| v.starts_with("Basic realm=\"tessera\""))
    );
    let unknown = h
        .post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&basic("nobody", "es-secret")),
        )
        .await;
    assert_eq!(
        unknown.body, r.body,
        "an unknown client is indistinguishable from a wrong secret"
    );
    is_error(
        &h.cc("/oauth2/token", "es-client", "wrong", &[]).await,
        401,
        "invalid_client",
        "client authentication failed",
    );
    is_error(
        &h.post("/oauth2/token", "grant_type=client_credentials", None)
            .await,
        401,
        "invalid_client",
        "no client authentication",
    );
    is_error(
        &h.post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some("Bearer abc"),
        )
        .await,
        401,
        "invalid_client",
        "not HTTP Basic",
    );
    // A method the client's policy does not allow (post-only): named after the secret checks out.
    let r = h
        .post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&basic("post-client", "post-secret")),
        )
        .await;
    is_error(
        &r,
        401,
        "invalid_client",
        "does not allow client_secret_basic; use one of: client_secret_post",
    );
    assert_eq!(
        h.cc("/oauth2/token", "post-client", "post-secret", &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn unauthorized_client_unsupported_grant_type() {
    let h = Harness::new();
    let auth = basic("rs-client", "rs-secret");
    is_error(
        &h.post(
            "/oauth2/token",
            "grant_type=refresh_token&refresh_token=x",
            Some(&auth),
        )
        .await,
        400,
        "unauthorized_client",
        "refresh_token grant",
    );
    is_error(
        &h.post(
            "/oauth2/token",
            "grant_type=authorization_code&code=x",
            Some(&auth),
        )
        .await,
        400,
        "unsupported_grant_type",
        "use client_credentials, password or refresh_token",
    );
}

#[tokio::test]
async fn a_guesser_slows_itself_down_and_cannot_lock_the_client_out() {
    let h = Harness::new();
    let guesser = "203.0.113.66";
    // Five free failures, a sixth at once, then the guesser has to wait.
    for i in 0..6 {
        let r = h.cc_from(guesser, "es-client", &format!("guess-{i}")).await;
        assert_eq!(r.status, 401, "guess {i}: {}", r.body);
    }
    let slowed = h.cc_from(guesser, "es-client", "guess-x").await;
    assert_eq!(slowed.status, 429, "{}", slowed.body);
    assert_eq!(slowed.error(), "slow_down");
    let retry: u64 = slowed.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=300).contains(&retry), "{retry}");
    assert_eq!(
        h.cc_from(guesser, "es-client", "es-secret").await.status,
        429,
        "the guessing source is not checked while it waits, even with the right secret"
    );
    // The review's attack: this used to lock es-client for everyone.
    assert_eq!(
        h.cc_from("198.51.100.7", "es-client", "es-secret")
            .await
            .status,
        200,
        "the client itself, from its own address, is served"
    );
    assert_eq!(
        h.cc_from(guesser, "rs-client", "rs-secret").await.status,
        200,
        "other clients are unaffected, even from the guesser's address"
    );
    // Behind one address, clients that authenticated there before keep working after it has
    // sprayed guesses at many client_ids (the Ingress case without --trusted-proxies).
    let ingress = "10.0.0.1";
    assert_eq!(
        h.cc_from(ingress, "rs-client", "rs-secret").await.status,
        200
    );
    let mut refused = 0;
    for i in 0..150 {
        if h.cc_from(ingress, &format!("guess-{i}"), "x").await.status == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 40, "the address budget (100) ran out: {refused}");
    assert_eq!(
        h.cc_from(ingress, "rs-client", "rs-secret").await.status,
        200,
        "a client known at this address is still served"
    );
}

#[tokio::test]
async fn unknown_paths_and_not_yet_loaded() {
    let h = Harness::new();
    let r = h.get("/nope").await;
    assert_eq!((r.status.as_u16(), r.error()), (404, "not_found"));
    let empty = tessera_token_server::state::AppState::new(Default::default());
    let router = tessera_token_server::http::router(empty);
    let req = Request::post("/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("grant_type=client_credentials"))
        .expect("req");
    let resp = tower::ServiceExt::oneshot(router, req).await.expect("resp");
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn secrets_never_appear_in_responses() {
    let h = Harness::new();
    for r in [
        h.cc("/oauth2/token", "es-client", "my-guess-secret", &[])
            .await,
        h.post(
            "/oauth2/token",
            &form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "pw-guess-123"),
            ]),
            Some(&basic("es-client", "es-secret")),
        )
        .await,
    ] {
        let text = r.body.to_string();
        assert!(
            !text.contains("my-guess-secret")
                && !text.contains("pw-guess-123")
                && !text.contains("es-secret"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn failed_passwords_lock_the_user_not_the_client_or_other_users() {
    let users = "apiVersion: v1\nkind: Secret\nmetadata: {name: users}\nstringData:\n  alice: \"$argon2id$v=19$m=19456,t=2,p=1$LqznMbJhu4Fj1acGEEoINA$L/2hEu57damxMU+/UB/sxQ/eRM9DYsJzphuBoClqxJo\"\n  bob: \"$argon2id$v=19$m=19456,t=2,p=1$mlJ7PiKifTkP6z0HqKV7eA$RpCWnA2e3Qiu5N121bv1RTG6L2kjIFejHLwugPmntAU\"\n";
    let fixture = FIXTURE.replace(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: users}\nstringData:\n  alice: \"$argon2id$v=19$m=19456,t=2,p=1$LqznMbJhu4Fj1acGEEoINA$L/2hEu57damxMU+/UB/sxQ/eRM9DYsJzphuBoClqxJo\"\n",
        users,
    );
    assert_ne!(fixture, FIXTURE, "the fixture's user pool was replaced");
    let h = Harness::with_files(&[("fixture.yaml", &fixture)]);
    let auth = basic("es-client", "es-secret");
    let try_pw = |user: &'static str, pw: &'static str| {
        let body = form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", pw),
        ]);
        let auth = auth.clone();
        let h = &h;
        async move { h.post("/oauth2/token", &body, Some(&auth)).await }
    };
    for _ in 0..6 {
        assert_eq!(try_pw("alice", "guess").await.error(), "invalid_grant");
    }
    let locked = try_pw("alice", ALICE_PASSWORD).await;
    assert_eq!(
        locked.status, 429,
        "the guessing source is not checked while it waits: {}",
        locked.body
    );
    assert!(locked.headers.contains_key("retry-after"));
    // From another address alice signs in: a guesser cannot lock her out.
    let pw = |user: &str, password: &str| {
        form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
        ])
    };
    let elsewhere = h
        .post_from(
            "198.51.100.8",
            "/oauth2/token",
            &pw("alice", ALICE_PASSWORD),
            Some(&auth),
        )
        .await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.body);
    // Ten wrong passwords against a proxy key (`-`, no client secret) slow that guesser for
    // that user, not every user of the API.
    let proxy = |user: &str, password: &str| {
        form(&[
            ("grant_type", "password"),
            ("client_id", "reports-key"),
            ("client_secret", "-"),
            ("username", user),
            ("password", password),
        ])
    };
    for _ in 0..10 {
        h.post_from("203.0.113.9", "/auth/jwt", &proxy("alice", "guess"), None)
            .await;
    }
    assert_eq!(
        h.post_from(
            "203.0.113.9",
            "/auth/jwt",
            &proxy("bob", "bob-demo-password"),
            None
        )
        .await
        .status,
        200,
        "another user of the proxy key, from the same address"
    );
    assert_eq!(
        h.post_from(
            "192.0.2.10",
            "/auth/jwt",
            &proxy("alice", ALICE_PASSWORD),
            None
        )
        .await
        .status,
        200,
        "the same user from elsewhere"
    );
    assert_eq!(
        try_pw("bob", "bob-demo-password").await.status,
        200,
        "another user of the same client"
    );
    assert_eq!(
        h.post(
            "/oauth2/token",
            "grant_type=client_credentials",
            Some(&auth)
        )
        .await
        .status,
        200,
        "the client itself"
    );
}

#[tokio::test]
async fn a_successful_authentication_resets_the_failure_count() {
    let h = Harness::new();
    // Five failures (the free ones), a success, five more: the success forgets the first five,
    // so no delay ever starts.
    for _ in 0..5 {
        assert_eq!(
            h.cc("/oauth2/token", "es-client", "typo", &[]).await.status,
            401
        );
    }
    assert_eq!(
        h.cc("/oauth2/token", "es-client", "es-secret", &[])
            .await
            .status,
        200
    );
    for _ in 0..5 {
        assert_eq!(
            h.cc("/oauth2/token", "es-client", "typo", &[]).await.status,
            401
        );
    }
    assert_eq!(
        h.cc("/oauth2/token", "es-client", "es-secret", &[])
            .await
            .status,
        200
    );
}

/// RFC 6749 §5.2: `error_description` keeps to %x20-21 / %x23-5B / %x5D-7E, whatever the
/// request echoed into it (a scope, a grant type, a resource) held.
#[tokio::test]
async fn error_descriptions_never_carry_quotes_backslashes_or_non_ascii_from_the_request() {
    let h = Harness::new();
    let hostile = "orders:read\"}\\ünï\u{7f}";
    for extra in [
        vec![("scope", hostile)],
        vec![("resource", hostile)],
        vec![("audience", hostile)],
    ] {
        let r = h
            .cc("/oauth2/token", "es-client", "es-secret", &extra)
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        let d = r.desc();
        assert!(!d.is_empty(), "{}", r.body);
        assert!(
            d.chars()
                .all(|c| matches!(c as u32, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e)),
            "{d}"
        );
    }
    let r = h
        .post(
            "/oauth2/token",
            &form(&[("grant_type", "a\"b\\cü")]),
            Some(&basic("es-client", "es-secret")),
        )
        .await;
    assert_eq!(r.error(), "unsupported_grant_type", "{}", r.body);
    assert!(
        !r.desc().contains('"') && !r.desc().contains('\\'),
        "{}",
        r.desc()
    );
}
