//! The audit trail: each event kind driven through the API and checked against the documented
//! schema (README: Audit trail), request ids followed from header to event, and no secret,
//! password or token in any line.

use crate::harness::*;
use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use std::time::Duration;
use tessera_token_server::audit::{Audit, Counters, MemorySink, QUEUE, SCHEMA, Sink};

#[derive(Clone, Default)]
struct Buffer(MemorySink);

impl Buffer {
    fn lines(&self) -> Vec<String> {
        self.0.text().lines().map(str::to_owned).collect()
    }

    /// Waits for the writer thread to write an event of `kind` after line `from`.
    async fn next(&self, from: usize, kind: &str) -> Value {
        for _ in 0..500 {
            if let Some(v) = self.lines()[from.min(self.lines().len())..]
                .iter()
                .map(|l| serde_json::from_str::<Value>(l).expect("each line is JSON"))
                .find(|v| v["event"] == kind)
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {kind} event after line {from}: {:#?}", self.lines());
    }
}

const LIMITED: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: limited}
spec: {rateLimit: {requestsPerSecond: 1, burst: 1}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: limited-client}
spec: {clientId: limited-client, secretRef: {name: s-limited}, policyRef: {name: limited}, acl: [orders]}
---
apiVersion: v1
kind: Secret
metadata: {name: s-limited}
stringData: {client_secret: limited-secret-value}
"#;

/// The documented fields: top level, `actor`, `target`.
const TOP: [&str; 10] = [
    "time",
    "schema",
    "event",
    "outcome",
    "request_id",
    "source_address",
    "actor",
    "target",
    "reason",
    "retry_after",
];
const ACTOR: [&str; 4] = ["client_id", "credential", "method", "user"];
const TARGET: [&str; 8] = [
    "policy",
    "grant",
    "audience",
    "scope",
    "token_type",
    "token_id",
    "expires_in",
    "kids",
];

/// Checks `v` against the schema, and that it carries `fields` (dotted paths).
fn conforms(v: &Value, fields: &[&str]) {
    let obj = v.as_object().expect("an object");
    for k in obj.keys() {
        assert!(TOP.contains(&k.as_str()), "undocumented field {k}: {v}");
    }
    for (part, allowed) in [("actor", &ACTOR[..]), ("target", &TARGET[..])] {
        for k in v[part].as_object().expect(part).keys() {
            assert!(
                allowed.contains(&k.as_str()),
                "undocumented {part}.{k}: {v}"
            );
        }
    }
    assert_eq!(v["schema"], SCHEMA);
    v["time"]
        .as_str()
        .expect("time")
        .parse::<jiff::Timestamp>()
        .expect("time is RFC 3339");
    assert!(
        ["success", "failure"].contains(&v["outcome"].as_str().expect("outcome")),
        "{v}"
    );
    for f in fields {
        let mut cur = v;
        for p in f.split('.') {
            cur = &cur[p];
        }
        assert!(!cur.is_null(), "{} lacks {f}: {v}", v["event"]);
    }
}

fn jti(jwt: &str) -> String {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("b64");
    serde_json::from_slice::<Value>(&bytes).expect("claims")["jti"]
        .as_str()
        .expect("jti")
        .to_owned()
}

#[tokio::test]
async fn every_event_kind_is_written_with_the_documented_fields_and_no_secret() {
    let mut h = Harness::with_files(&[("fixture.yaml", FIXTURE), ("limited.yaml", LIMITED)]);
    let buf = Buffer::default();
    h.state.audit = Audit::start(
        Sink::Writer(Box::new(buf.0.clone())),
        QUEUE,
        Counters::default(),
    );
    let mut secrets: Vec<String> = vec![
        "es-secret".into(),
        "limited-secret-value".into(),
        ALICE_PASSWORD.into(),
        "wrong-secret-guess".into(),
        "not-alices-password".into(),
    ];

    // token.issued, with the caller's request id.
    let req = Request::post("/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic("es-client", "es-secret"))
        .header("x-request-id", "gw-7f3a:1")
        .body(Body::from("grant_type=client_credentials"))
        .expect("request");
    let r = h.send(req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-request-id"], "gw-7f3a:1", "the id is echoed");
    let token = r.str("access_token");
    secrets.push(token.clone());
    let v = buf.next(0, "token.issued").await;
    conforms(
        &v,
        &[
            "request_id",
            "actor.client_id",
            "actor.credential",
            "actor.method",
            "target.policy",
            "target.grant",
            "target.audience",
            "target.scope",
            "target.token_type",
            "target.token_id",
            "target.expires_in",
        ],
    );
    assert_eq!(v["request_id"], "gw-7f3a:1");
    assert_eq!(v["outcome"], "success");
    assert_eq!(v["actor"]["client_id"], "es-client");
    assert_eq!(v["actor"]["credential"], "default/es-client");
    assert_eq!(v["actor"]["method"], "client_secret_basic");
    assert_eq!(v["target"]["policy"], "default/es");
    assert_eq!(v["target"]["grant"], "client_credentials");
    assert_eq!(v["target"]["token_type"], "jwt");
    assert_eq!(
        v["target"]["token_id"],
        jti(&token),
        "names the token by its jti"
    );
    assert_eq!(v["target"]["expires_in"], 600);

    // client.authentication_failed: the reason class, never the secret; the source address.
    let n = buf.lines().len();
    let r = h
        .cc_from("192.0.2.10", "es-client", "wrong-secret-guess")
        .await;
    assert_eq!(r.status, 401);
    assert!(
        r.headers.contains_key("x-request-id"),
        "errors carry the id too"
    );
    let v = buf.next(n, "client.authentication_failed").await;
    conforms(
        &v,
        &["request_id", "source_address", "actor.client_id", "reason"],
    );
    assert_eq!(v["outcome"], "failure");
    assert_eq!(v["source_address"], "192.0.2.10");
    assert_eq!(
        v["request_id"],
        r.headers["x-request-id"].to_str().expect("ascii")
    );
    assert!(
        v["reason"]
            .as_str()
            .expect("reason")
            .starts_with("invalid_client")
    );

    // user.authentication_failed, then a password grant that succeeds.
    let n = buf.lines().len();
    let pw = |p: &'static str| {
        form(&[
            ("grant_type", "password"),
            ("client_id", "es-client"),
            ("client_secret", "es-secret"),
            ("username", "alice"),
            ("password", p),
        ])
    };
    let r = h
        .post("/oauth2/token", &pw("not-alices-password"), None)
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let v = buf.next(n, "user.authentication_failed").await;
    conforms(
        &v,
        &["actor.client_id", "actor.user", "target.grant", "reason"],
    );
    assert_eq!(v["actor"]["user"], "alice");
    let n = buf.lines().len();
    let r = h.post("/oauth2/token", &pw(ALICE_PASSWORD), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let refresh = r.str("refresh_token");
    secrets.push(r.str("access_token"));
    secrets.push(refresh.clone());
    let v = buf.next(n, "token.issued").await;
    assert_eq!(
        (&v["target"]["grant"], &v["actor"]["user"]),
        (&"password".into(), &"alice".into())
    );

    // refresh.reuse_detected: a rotated refresh token presented twice.
    let rt = |t: &str| {
        form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "es-client"),
            ("client_secret", "es-secret"),
            ("refresh_token", t),
        ])
    };
    let r = h.post("/oauth2/token", &rt(&refresh), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    secrets.push(r.str("refresh_token"));
    let n = buf.lines().len();
    let r = h.post("/oauth2/token", &rt(&refresh), None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let v = buf.next(n, "refresh.reuse_detected").await;
    conforms(
        &v,
        &[
            "actor.client_id",
            "target.grant",
            "target.token_id",
            "reason",
        ],
    );
    assert_eq!(v["outcome"], "failure");

    // token.revoked: a fresh refresh token revoked by its client.
    let r = h.post("/oauth2/token", &pw(ALICE_PASSWORD), None).await;
    let fresh = r.str("refresh_token");
    secrets.push(fresh.clone());
    let n = buf.lines().len();
    let r = h
        .post(
            "/oauth2/revoke",
            &form(&[("token", &fresh)]),
            Some(&basic("es-client", "es-secret")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = buf.next(n, "token.revoked").await;
    conforms(
        &v,
        &["actor.client_id", "target.token_type", "target.token_id"],
    );
    assert_eq!(v["target"]["token_type"], "refresh");

    // rate_limit.exceeded: one token per second for limited-client.
    let n = buf.lines().len();
    for _ in 0..3 {
        let _ = h
            .cc(
                "/oauth2/token",
                "limited-client",
                "limited-secret-value",
                &[],
            )
            .await;
    }
    let v = buf.next(n, "rate_limit.exceeded").await;
    conforms(
        &v,
        &["actor.client_id", "target.policy", "retry_after", "reason"],
    );
    assert_eq!(v["target"]["policy"], "default/limited");

    // lockout.started: one source guessing one client's secret.
    let n = buf.lines().len();
    let mut limited = false;
    for _ in 0..30 {
        if h.cc_from("198.51.100.7", "stranger", "wrong-secret-guess")
            .await
            .status
            == 429
        {
            limited = true;
            break;
        }
    }
    assert!(limited, "the guesser is told to wait");
    let v = buf.next(n, "lockout.started").await;
    conforms(&v, &["actor.client_id", "source_address", "retry_after"]);
    assert_eq!(v["source_address"], "198.51.100.7");

    // keys.changed: a new key set is served.
    let n = buf.lines().len();
    let keys = tessera_token_server::token::keys::KeySet::generate_file(jiff::Timestamp::now())
        .expect("keys");
    std::fs::write(h.path().join("keys.yaml"), keys_manifest(&keys)).expect("write keys");
    h.reload().expect("reload");
    let v = buf.next(n, "keys.changed").await;
    conforms(&v, &["target.kids"]);
    assert!(!v["target"]["kids"].as_array().expect("kids").is_empty());

    // Nothing secret anywhere in the trail.
    let all = buf.lines().join("\n");
    for s in &secrets {
        assert!(
            !all.contains(s.as_str()),
            "the audit trail holds a secret or token: {s}"
        );
    }
    assert!(
        !all.to_ascii_lowercase().contains("authorization"),
        "no header dump"
    );
}

#[tokio::test]
async fn a_hostile_request_id_is_replaced_and_a_traceparent_is_followed() {
    let h = Harness::new();
    let send = |hdr: &'static str, value: &str| {
        Request::post("/oauth2/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .header(hdr, value)
            .body(Body::from("grant_type=client_credentials"))
            .expect("request")
    };
    let r = h
        .send(send("x-request-id", "evil\"}{\"event\":\"forged"))
        .await;
    let id = r.headers["x-request-id"].to_str().expect("ascii");
    assert!(!id.contains('"') && !id.contains('{'), "{id}");
    let r = h
        .send(send(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .await;
    assert_eq!(
        r.headers["x-request-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}
