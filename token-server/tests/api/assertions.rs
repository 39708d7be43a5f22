//! `private_key_jwt` (RFC 7523 §2.2): assertions built and signed here by hand (aws-lc-rs, keys
//! from rcgen), tokens checked with jsonwebtoken, and every bad input refused with
//! `invalid_client`, never a 500.

use super::harness::{Harness, ISSUER, form};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

struct Keys {
    ec: rcgen::KeyPair,
    ed: rcgen::KeyPair,
    other: rcgen::KeyPair,
}

fn keys() -> Keys {
    let new_key = |a| rcgen::KeyPair::generate_for(a).expect("key");
    Keys {
        ec: new_key(&rcgen::PKCS_ECDSA_P256_SHA256),
        ed: new_key(&rcgen::PKCS_ED25519),
        other: new_key(&rcgen::PKCS_ECDSA_P256_SHA256),
    }
}

fn ec_jwk(k: &rcgen::KeyPair, kid: &str) -> String {
    let raw = k.public_key_raw();
    format!(
        "{{kty: EC, crv: P-256, kid: {kid}, x: {}, y: {}}}",
        URL_SAFE_NO_PAD.encode(&raw[1..33]),
        URL_SAFE_NO_PAD.encode(&raw[33..65])
    )
}

fn manifests(k: &Keys) -> String {
    format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {{name: keyed}}
spec: {{signingAlgorithm: ES256, clientAuthMethods: [private_key_jwt]}}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {{name: secrets}}
spec: {{}}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {{name: ledger}}
spec: {{audience: "https://api.test/ledger", basePath: /ledger}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {{name: signer}}
spec:
  clientId: signer
  policyRef: {{name: keyed}}
  acl: [ledger]
  jwks:
    keys:
      - {ec}
      - {{kty: OKP, crv: Ed25519, kid: ed-1, x: {ed}}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {{name: other}}
spec:
  clientId: other
  policyRef: {{name: keyed}}
  acl: [ledger]
  jwks: {{keys: [{other}]}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {{name: secret-only}}
spec: {{clientId: secret-only, secretRef: {{name: s}}, policyRef: {{name: secrets}}, acl: [ledger], jwks: {{keys: [{ec2}]}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: s}}
stringData: {{client_secret: secret-only-secret}}
"#,
        ec = ec_jwk(&k.ec, "ec-1"),
        ed = URL_SAFE_NO_PAD.encode(k.ed.public_key_raw()),
        other = ec_jwk(&k.other, "other-1"),
        ec2 = ec_jwk(&k.ec, "ec-1"),
    )
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn claims(iss: &str, aud: &str, jti: &str) -> Value {
    json!({"iss": iss, "sub": iss, "aud": aud, "exp": now() + 60, "iat": now(), "jti": jti})
}

/// Signs a compact JWS by hand with aws-lc-rs, not with jsonwebtoken's encoder: the server's
/// verifier meets assertions made by other code than its own dependency's.
fn sign(key: &rcgen::KeyPair, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    let name = match alg {
        Algorithm::EdDSA => "EdDSA",
        _ => "ES256",
    };
    let mut header = json!({"alg": name, "typ": "JWT"});
    if let Some(k) = kid {
        header["kid"] = json!(k);
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let der = key.serialize_der();
    let sig = match alg {
        Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8(&der)
            .expect("ed25519 pkcs8")
            .sign(input.as_bytes())
            .as_ref()
            .to_vec(),
        _ => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .expect("p256 pkcs8")
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .expect("sign")
            .as_ref()
            .to_vec(),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

const TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn token_with(h: &Harness, assertion: &str, client_id: Option<&str>) -> super::harness::Resp {
    let mut p = vec![
        ("grant_type", "client_credentials"),
        ("client_assertion_type", TYPE),
        ("client_assertion", assertion),
    ];
    if let Some(id) = client_id {
        p.push(("client_id", id));
    }
    // Each request from its own address: the bad cases are failures, counted by the guessing
    // budgets, and one source would soon be told to wait.
    let ip = format!(
        "10.9.{}.{}",
        rand_id().parse::<u32>().unwrap_or(0) / 250,
        rand_id().parse::<u32>().unwrap_or(0) % 250 + 1
    );
    h.post_from(&ip, "/oauth2/token", &form(&p), None).await
}

fn token_endpoint() -> String {
    format!("{ISSUER}/oauth2/token")
}

#[tokio::test]
async fn signed_assertions_get_tokens_an_independent_validator_accepts() {
    let k = keys();
    let h = Harness::with_files(&[("m.yaml", &manifests(&k))]);
    let a = sign(
        &k.ec,
        Algorithm::ES256,
        Some("ec-1"),
        &claims("signer", &token_endpoint(), "j1"),
    );
    let r = token_with(&h, &a, Some("signer")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = h.verify_jwt(&r.str("access_token")).await;
    assert_eq!(c["client_id"], "signer");
    // EdDSA, the issuer as audience, and no client_id: the assertion's sub names the client.
    let a = sign(
        &k.ed,
        Algorithm::EdDSA,
        Some("ed-1"),
        &claims("signer", ISSUER, "j2"),
    );
    let r = token_with(&h, &a, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Introspection with an assertion too.
    let token = r.str("access_token");
    let a = sign(
        &k.ec,
        Algorithm::ES256,
        Some("ec-1"),
        &claims("signer", ISSUER, "j3"),
    );
    let i = h
        .post(
            "/oauth2/introspect",
            &form(&[
                ("client_assertion_type", TYPE),
                ("client_assertion", &a),
                ("token", &token),
            ]),
            None,
        )
        .await;
    assert_eq!(
        (i.status.as_u16(), &i.body["active"]),
        (200, &json!(true)),
        "{}",
        i.body
    );
    let d = h.get("/.well-known/openid-configuration").await.body;
    assert!(
        d["token_endpoint_auth_methods_supported"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m == "private_key_jwt")),
        "{d}"
    );
    assert_eq!(
        d["token_endpoint_auth_signing_alg_values_supported"],
        json!(["RS256", "PS256", "ES256", "EdDSA"])
    );
}

#[tokio::test]
async fn every_bad_assertion_is_invalid_client() {
    let k = keys();
    let h = Harness::with_files(&[("m.yaml", &manifests(&k))]);
    let aud = token_endpoint();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("signer", &aud, &format!("j-{}", rand_id()));
        f(&mut c);
        c
    };
    let es = |c: &Value| sign(&k.ec, Algorithm::ES256, Some("ec-1"), c);
    let pub_key_bytes = k.ec.public_key_raw().to_vec();
    let hs = jsonwebtoken::encode(
        &{
            let mut hd = Header::new(Algorithm::HS256);
            hd.kid = Some("ec-1".into());
            hd
        },
        &claims("signer", &aud, "hs"),
        &EncodingKey::from_secret(&pub_key_bytes),
    )
    .expect("hs256");
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"ec-1"}"#),
        URL_SAFE_NO_PAD.encode(claims("signer", &aud, "none").to_string())
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            es(&with(&|c| c["exp"] = json!(now() - 120))),
            "expired",
        ),
        (
            "exp too far",
            es(&with(&|c| c["exp"] = json!(now() + 3600))),
            "5 minutes",
        ),
        (
            "no exp",
            es(&with(&|c| {
                c.as_object_mut().map(|o| o.remove("exp"));
            })),
            "no exp",
        ),
        (
            "not yet valid",
            es(&with(&|c| c["nbf"] = json!(now() + 600))),
            "not valid yet",
        ),
        (
            "wrong audience",
            es(&with(&|c| c["aud"] = json!("https://elsewhere.test"))),
            "aud",
        ),
        (
            "wrong issuer",
            es(&with(&|c| c["iss"] = json!("someone"))),
            "iss and sub",
        ),
        (
            "no jti",
            es(&with(&|c| {
                c.as_object_mut().map(|o| o.remove("jti"));
            })),
            "jti",
        ),
        (
            "unknown kid",
            sign(&k.ec, Algorithm::ES256, Some("nope"), &with(&|_| {})),
            "signed by one of this client's keys",
        ),
        (
            "another client's key",
            sign(&k.other, Algorithm::ES256, Some("ec-1"), &with(&|_| {})),
            "signed by one of this client's keys",
        ),
        ("alg none", none, "signed by one of this client's keys"),
        (
            "HS256 keyed with the public key",
            hs,
            "signed by one of this client's keys",
        ),
        (
            "alg not the key's",
            sign(&k.ed, Algorithm::EdDSA, Some("ec-1"), &with(&|_| {})),
            "signed by one of this client's keys",
        ),
        (
            "malformed",
            "not.a.jwt".into(),
            "signed by one of this client's keys",
        ),
    ];
    for (what, a, says) in &cases {
        let r = token_with(&h, a, Some("signer")).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.error(), "invalid_client", "{what}");
        assert!(r.desc().contains(says), "{what}: {}", r.desc());
    }
    // An assertion made by `other` for itself, presented as `signer`.
    let theirs = sign(
        &k.other,
        Algorithm::ES256,
        Some("other-1"),
        &claims("other", &aud, "t1"),
    );
    let r = token_with(&h, &theirs, Some("signer")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // Reused jti: the first use works, the replay is refused.
    let once = es(&claims("signer", &aud, "only-once"));
    assert_eq!(token_with(&h, &once, Some("signer")).await.status, 200);
    let again = token_with(&h, &once, Some("signer")).await;
    assert_eq!(again.status, 401, "{}", again.body);
    assert!(again.desc().contains("used before"), "{}", again.desc());
    // Oversized.
    let big = "a".repeat(9000);
    let r = token_with(&h, &big, Some("signer")).await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (401, "invalid_client"),
        "{}",
        r.body
    );
    // A secret and an assertion at once: two methods.
    let a = es(&claims("signer", &aud, "both"));
    let r = h
        .post(
            "/oauth2/token",
            &form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "signer"),
                ("client_secret", "x"),
                ("client_assertion_type", TYPE),
                ("client_assertion", &a),
            ]),
            None,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (400, "invalid_request"),
        "{}",
        r.body
    );
    // The wrong assertion type.
    let r = h
        .post(
            "/oauth2/token",
            &form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
                ),
                ("client_assertion", &a),
            ]),
            None,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error()),
        (401, "invalid_client"),
        "{}",
        r.body
    );
    // A policy without private_key_jwt: keys in the Credential are not enough.
    let a = es(&claims("secret-only", &aud, "p1"));
    let r = token_with(&h, &a, Some("secret-only")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.desc().contains("does not allow private_key_jwt"),
        "{}",
        r.desc()
    );
}

fn rand_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

fn jwks_json(k: &rcgen::KeyPair, kid: &str) -> String {
    let raw = k.public_key_raw();
    json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])}]})
    .to_string()
}

fn referenced(jwks: &str) -> String {
    format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {{name: keyed}}
spec: {{signingAlgorithm: ES256, clientAuthMethods: [private_key_jwt]}}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {{name: ledger}}
spec: {{audience: "https://api.test/ledger", basePath: /ledger}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {{name: rotating}}
spec: {{clientId: rotating, policyRef: {{name: keyed}}, acl: [ledger], jwksRef: {{secretRef: {{name: rotating-jwks}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: rotating-jwks}}
stringData:
  jwks.json: '{jwks}'
"#
    )
}

/// Keys by reference: rotated in the Secret (as cert-manager or a GitOps repository would),
/// picked up on reload; a JWKS with a private key in it authenticates nobody and says why.
#[tokio::test]
async fn keys_referenced_from_a_secret_rotate_with_it() {
    let k = keys();
    let h = Harness::with_files(&[("m.yaml", &referenced(&jwks_json(&k.ec, "2026-a")))]);
    let aud = token_endpoint();
    let a = sign(
        &k.ec,
        Algorithm::ES256,
        Some("2026-a"),
        &claims("rotating", &aud, "r1"),
    );
    assert_eq!(token_with(&h, &a, None).await.status, 200);
    std::fs::write(
        h.path().join("m.yaml"),
        referenced(&jwks_json(&k.other, "2026-b")),
    )
    .expect("rotate");
    h.reload().expect("reload");
    let old = sign(
        &k.ec,
        Algorithm::ES256,
        Some("2026-a"),
        &claims("rotating", &aud, "r2"),
    );
    assert_eq!(
        token_with(&h, &old, None).await.status,
        401,
        "the old key is gone"
    );
    let new = sign(
        &k.other,
        Algorithm::ES256,
        Some("2026-b"),
        &claims("rotating", &aud, "r3"),
    );
    assert_eq!(token_with(&h, &new, None).await.status, 200);
    // A private member in the referenced JWKS.
    let leaked = jwks_json(&k.ec, "2026-c").replace(r#""kty""#, r#""d":"c2VjcmV0","kty""#);
    std::fs::write(h.path().join("m.yaml"), referenced(&leaked)).expect("write");
    h.reload().expect("reload");
    let a = sign(
        &k.ec,
        Algorithm::ES256,
        Some("2026-c"),
        &claims("rotating", &aud, "r4"),
    );
    assert_eq!(token_with(&h, &a, None).await.status, 401);
    let served = h.state.served.load_full().expect("served");
    let report = format!("{:?}", served.snapshot.report().with_problems());
    assert!(
        report.contains("spec.jwksRef.secretRef.key") && report.contains("private key"),
        "{report}"
    );
}
