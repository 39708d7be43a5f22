//! A token server on a temporary folder of manifests, driven through `Router::oneshot`, with a
//! clock the test moves. JWTs are checked with `jsonwebtoken` against the served JWKS: an
//! independent validator (the server signs with aws-lc-rs key pairs directly).

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use tessera_token_server::source::dir::DirLoader;
use tessera_token_server::state::{AppState, Config};
use tessera_token_server::token::keys::KeySet;
use tower::ServiceExt as _;

pub const ISSUER: &str = "https://tokens.test";
pub const ALICE_PASSWORD: &str = "alice-demo-password";
/// A client_id and secret with every character RFC 6749 §2.3.1's form-encoding is about.
pub const WEIRD_ID: &str = "app:1%+ü";
pub const WEIRD_SECRET: &str = "s:e%c+r ét";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "tessera-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Harness {
    pub dir: TempDir,
    pub state: AppState,
    pub loader: std::sync::Mutex<DirLoader>,
    pub offset: Arc<AtomicI64>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
    pub fn desc(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or("")
    }
    pub fn str(&self, f: &str) -> String {
        self.body[f]
            .as_str()
            .unwrap_or_else(|| panic!("no `{f}` in {}", self.body))
            .to_owned()
    }
}

/// A key-set Secret manifest.
pub fn keys_manifest(file: &tessera_token_server::token::keys::KeySetFile) -> String {
    let json = serde_json::to_string(file).expect("json");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tessera-keys}}\nstringData:\n  keyset.json: '{json}'\n"
    )
}

pub fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Harness {
    /// A harness over the standard fixture.
    pub fn new() -> Self {
        Self::with_files(&[("fixture.yaml", FIXTURE)])
    }

    pub fn with_files(files: &[(&str, &str)]) -> Self {
        let dir = TempDir::new();
        let keys = KeySet::generate_file(jiff::Timestamp::now()).expect("keys");
        std::fs::write(dir.0.join("keys.yaml"), keys_manifest(&keys)).expect("write keys");
        for (name, text) in files {
            std::fs::write(dir.0.join(name), text).expect("write manifest");
        }
        let offset = Arc::new(AtomicI64::new(0));
        let mut state = AppState::new(Config {
            issuer: ISSUER.into(),
            ..Config::default()
        });
        let o = offset.clone();
        state.clock = Arc::new(move || {
            jiff::Timestamp::now() + jiff::SignedDuration::from_secs(o.load(Ordering::SeqCst))
        });
        let loader = DirLoader::new(dir.0.clone(), "tessera-keys".into(), ISSUER.into());
        let h = Harness {
            dir,
            state,
            loader: std::sync::Mutex::new(loader),
            offset,
        };
        h.reload().expect("fixture loads");
        h
    }

    pub fn path(&self) -> &Path {
        &self.dir.0
    }

    pub fn reload(&self) -> Result<(), String> {
        let now = (self.state.clock)();
        let served = self.loader.lock().expect("loader").load(now)?;
        self.state.publish(served);
        Ok(())
    }

    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn router(&self) -> Router {
        tessera_token_server::http::router(self.state.clone())
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// POSTs a form; `auth` is an Authorization header value.
    pub async fn post(&self, path: &str, body: &str, auth: Option<&str>) -> Resp {
        let mut b = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        self.send(b.body(Body::from(body.to_owned())).expect("request"))
            .await
    }

    /// POSTs a form as if from `ip` (the peer address a socket would give).
    pub async fn post_from(&self, ip: &str, path: &str, body: &str, auth: Option<&str>) -> Resp {
        let mut b = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let mut req = b.body(Body::from(body.to_owned())).expect("request");
        let addr = std::net::SocketAddr::new(ip.parse().expect("ip"), 40000);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        self.send(req).await
    }

    /// client_credentials with client_secret_post, from `ip`.
    pub async fn cc_from(&self, ip: &str, id: &str, secret: &str) -> Resp {
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ]);
        self.post_from(ip, "/oauth2/token", &body, None).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }

    /// client_credentials with client_secret_post.
    pub async fn cc(&self, path: &str, id: &str, secret: &str, extra: &[(&str, &str)]) -> Resp {
        let mut p = vec![
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ];
        p.extend_from_slice(extra);
        self.post(path, &form(&p), None).await
    }

    /// Verifies a JWT against the served JWKS with jsonwebtoken and returns its claims.
    pub async fn verify_jwt(&self, token: &str) -> Value {
        let header = jsonwebtoken::decode_header(token).expect("JWT header");
        assert_eq!(header.typ.as_deref(), Some("at+jwt"), "RFC 9068 typ");
        let kid = header.kid.clone().expect("kid");
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(self.get("/.well-known/jwks.json").await.body).expect("JWKS");
        let jwk = jwks.find(&kid).expect("kid is published");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("decoding key");
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_issuer(&[ISSUER]);
        v.validate_aud = false;
        v.set_required_spec_claims(&["iss", "sub", "iat"]);
        v.validate_exp = false;
        jsonwebtoken::decode::<Value>(token, &key, &v)
            .expect("valid signature")
            .claims
    }
}

/// The standard fixture: a client for every policy shape the tests need.
pub const FIXTURE: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: orders}
spec: {audience: "https://api.test/orders", basePath: /orders}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: inventory}
spec: {audience: "https://api.test/inventory", basePath: /inventory}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: reports}
spec: {audience: "https://api.test/reports", basePath: /reports, authPolicyRef: {name: managed}, proxyKey: {clientId: reports-key, secretRef: {name: s-reports}}}
---
apiVersion: tessera.dev/v1alpha1
kind: ApiProxy
metadata: {name: ledger}
spec: {audience: "https://api.test/ledger", basePath: /ledger, authPolicyRef: {name: managed-opaque}, proxyKey: {clientId: ledger-key, secretRef: {name: s-ledger}}}
---
apiVersion: tessera.dev/v1alpha1
kind: Role
metadata: {name: orders-read}
spec: {scope: "orders:read", apiProxies: [orders]}
---
apiVersion: tessera.dev/v1alpha1
kind: Role
metadata: {name: orders-write}
spec: {scope: "orders:write", apiProxies: [orders]}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: es}
spec:
  signingAlgorithm: ES256
  grantTypes: [client_credentials, password, refresh_token]
  accessToken: {ttl: 10m}
  refresh: {enabled: true, ttl: 1h, maxRefreshes: 2}
  userPool: {name: users}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: rs}
spec: {}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: ed}
spec: {signingAlgorithm: EdDSA, tokenManagement: {scopeMismatch: Intersect}}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: opaque}
spec:
  tokenType: OAuth2
  grantTypes: [client_credentials, password, refresh_token]
  refresh: {enabled: true, rotate: false}
  userPool: {name: users}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: post-only}
spec: {clientAuthMethods: [client_secret_post]}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: legacy}
spec:
  allowUrlParameters: true
  accessToken: {immortal: true}
  tokenManagement: {expiresInUnit: Milliseconds, returnScope: false, responseFields: {accessToken: token}}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: managed}
spec:
  management: Policy
  grantTypes: [client_credentials, password, refresh_token]
  refresh: {enabled: true}
  userPool: {name: users}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthPolicy
metadata: {name: managed-opaque}
spec: {management: Policy, tokenType: OAuth2}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: es-client}
spec: {clientId: es-client, secretRef: {name: s-es}, policyRef: {name: es}, acl: [inventory], roles: [orders-read, orders-write], claims: {tenant: acme}}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: rs-client}
spec: {clientId: rs-client, secretRef: {name: s-rs}, policyRef: {name: rs}, acl: [orders]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: ed-client}
spec: {clientId: ed-client, secretRef: {name: s-ed}, policyRef: {name: ed}, roles: [orders-read]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: opaque-client}
spec: {clientId: opaque-client, secretRef: {name: s-opaque}, policyRef: {name: opaque}, acl: [orders], roles: [orders-read]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: gateway}
spec: {clientId: orders-gateway, secretRef: {name: s-gateway}, policyRef: {name: opaque}, acl: [orders], introspects: [orders]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: stranger}
spec: {clientId: stranger, secretRef: {name: s-stranger}, policyRef: {name: opaque}, acl: [inventory]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: post-client}
spec: {clientId: post-client, secretRef: {name: s-post}, policyRef: {name: post-only}, acl: [orders]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: legacy-client}
spec: {clientId: legacy-client, secretRef: {name: s-legacy}, policyRef: {name: legacy}, acl: [orders]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: weird}
spec: {clientId: "app:1%+ü", secretRef: {name: s-weird}, policyRef: {name: rs}, acl: [orders]}
---
apiVersion: tessera.dev/v1alpha1
kind: Credential
metadata: {name: no-api}
spec: {clientId: no-api, secretRef: {name: s-rs}, policyRef: {name: rs}}
---
apiVersion: v1
kind: Secret
metadata: {name: users}
stringData:
  alice: "$argon2id$v=19$m=19456,t=2,p=1$LqznMbJhu4Fj1acGEEoINA$L/2hEu57damxMU+/UB/sxQ/eRM9DYsJzphuBoClqxJo"
---
apiVersion: v1
kind: Secret
metadata: {name: s-es}
stringData: {client_secret: es-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: s-rs}
stringData: {client_secret: rs-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: s-ed}
stringData: {client_secret: ed-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: s-opaque}
stringData: {client_secret: opaque-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: s-gateway}
stringData: {client_secret: gateway-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: s-stranger}
stringData: {client_secret: stranger-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: s-post}
stringData: {client_secret: post-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: s-legacy}
stringData: {client_secret: legacy-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: s-weird}
stringData: {client_secret: "s:e%c+r ét"}
---
apiVersion: v1
kind: Secret
metadata: {name: s-reports}
stringData: {client_secret: reports-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: s-ledger}
stringData: {client_secret: ledger-secret}
"#;
