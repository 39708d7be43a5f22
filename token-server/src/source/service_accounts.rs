//! Kubernetes ServiceAccount tokens as client assertions: verified against the cluster's own
//! service-account issuer, whose OIDC discovery document and JWKS the API server publishes
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`; the chart's
//! `tokenServer.serviceAccountTokens` binds the built-in `system:service-account-issuer-discovery`
//! ClusterRole that reads them). The keys are cached and fetched again on an unknown `kid`, at
//! most every [`REFETCH_AFTER`], so a flood of tokens with made-up kids costs the API server
//! nothing.
//!
//! Checked: the signature (RS256 or ES256, the key's), `iss` = the discovery issuer, `aud`
//! containing the token server's audience (its issuer by default), `exp` and `nbf` with 30 s of
//! skew, `sub` = `system:serviceaccount:NAMESPACE:NAME`. Not checked: whether the pod the token
//! was bound to still exists (TokenReview does that, at one API request per token).

use crate::state::{ServiceAccountId, ServiceAccountVerifier};
use arc_swap::ArcSwapOption;
use futures::future::BoxFuture;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often an unknown `kid` may trigger a fetch of the issuer's keys.
pub const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// The longest ServiceAccount token read.
pub const MAX_LEN: usize = 16 * 1024;
const SKEW: u64 = 30;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

struct Issuer {
    issuer: String,
    keys: JwkSet,
}

/// The cluster's service-account issuer, read through the API server.
pub struct ClusterIssuer {
    client: kube::Client,
    audience: String,
    cached: ArcSwapOption<Issuer>,
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

impl ClusterIssuer {
    /// Verifies tokens whose `aud` contains `audience`.
    pub fn new(client: kube::Client, audience: String) -> Self {
        Self {
            client,
            audience,
            cached: ArcSwapOption::empty(),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    async fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let req = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(FETCH_TIMEOUT, self.client.request::<serde_json::Value>(req))
            .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("reading {path} from the API server failed: {e}")),
            Err(_) => Err(format!("reading {path} from the API server timed out")),
        }
    }

    /// Fetches discovery and keys, unless another request just did.
    async fn refresh(&self) -> Result<(), String> {
        let _one = self.fetching.lock().await;
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < REFETCH_AFTER) && self.cached.load().is_some() {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let discovery = self.get("/.well-known/openid-configuration").await?;
        let issuer = discovery["issuer"]
            .as_str()
            .ok_or("the API server's OIDC discovery document has no issuer")?
            .to_owned();
        // The JWKS is read from the API server itself, whatever host jwks_uri names.
        let keys: JwkSet = serde_json::from_value(self.get("/openid/v1/jwks").await?)
            .map_err(|e| format!("the API server's service-account JWKS is not a JWKS: {e}"))?;
        tracing::info!(issuer = %issuer, keys = keys.keys.len(), "read the cluster's service-account issuer keys");
        self.cached.store(Some(Arc::new(Issuer { issuer, keys })));
        Ok(())
    }

    /// One TokenReview: the API server authenticates the token (a bound token of a deleted pod,
    /// or of a deleted ServiceAccount, fails) for our audience, and must name `id`.
    async fn token_review(&self, token: &str, id: &ServiceAccountId) -> Result<(), String> {
        let not = |why: &str| format!("the ServiceAccount token is not accepted: {why}");
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        });
        let req = http::Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let v = match tokio::time::timeout(
            FETCH_TIMEOUT,
            self.client.request::<serde_json::Value>(req),
        )
        .await
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "TokenReview failed");
                return Err(not("the API server could not review it right now; retry"));
            }
            Err(_) => return Err(not("the API server's TokenReview timed out; retry")),
        };
        let status = &v["status"];
        if status["authenticated"] != serde_json::Value::Bool(true) {
            return Err(not(
                "the API server's TokenReview refuses it (its pod or ServiceAccount is gone, or it was revoked)",
            ));
        }
        let expected = format!("system:serviceaccount:{}:{}", id.namespace, id.name);
        if status["user"]["username"].as_str() != Some(expected.as_str()) {
            return Err(not("the TokenReview names another user"));
        }
        Ok(())
    }

    async fn verify_token(&self, token: &str) -> Result<ServiceAccountId, String> {
        let not = |why: &str| format!("the ServiceAccount token is not accepted: {why}");
        if token.len() > MAX_LEN {
            return Err(not("longer than 16 KiB"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| not("not a JWT"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(not(
                "its algorithm is not the cluster issuer's (RS256 or ES256)",
            ));
        }
        let kid = header.kid.clone().unwrap_or_default();
        let known = |i: &Option<Arc<Issuer>>| {
            i.as_ref().is_some_and(|i| {
                i.keys
                    .keys
                    .iter()
                    .any(|k| k.common.key_id.as_deref() == Some(&kid))
            })
        };
        if !known(&self.cached.load_full())
            && let Err(e) = self.refresh().await
        {
            tracing::warn!(error = %e, "could not read the cluster's service-account issuer");
            return Err(not(
                "the cluster's issuer keys cannot be read right now; retry",
            ));
        }
        let issuer = self
            .cached
            .load_full()
            .ok_or_else(|| not("the cluster's issuer keys are not known yet"))?;
        let jwk = issuer
            .keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(&kid))
            .ok_or_else(|| {
                not("it is not signed by a key of this cluster's service-account issuer")
            })?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| not("the issuer key is not usable"))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&issuer.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = SKEW;
        #[derive(serde::Deserialize)]
        struct Claims {
            sub: String,
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => not("it has expired"),
                    K::ImmatureSignature => not("it is not valid yet"),
                    K::InvalidAudience => not(&format!(
                        "its audience is not {} (mount a projected token with that audience)",
                        self.audience
                    )),
                    K::InvalidIssuer => not("another issuer signed it"),
                    _ => not("its signature or claims do not verify"),
                }
            })?
            .claims;
        let rest = claims
            .sub
            .strip_prefix("system:serviceaccount:")
            .ok_or_else(|| not("its subject is not a ServiceAccount"))?;
        let (namespace, name) = rest
            .split_once(':')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains(':'))
            .ok_or_else(|| not("its subject is not system:serviceaccount:NAMESPACE:NAME"))?;
        Ok(ServiceAccountId {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl ServiceAccountVerifier for ClusterIssuer {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<ServiceAccountId, String>> {
        Box::pin(self.verify_token(token))
    }

    fn review<'a>(
        &'a self,
        token: &'a str,
        id: &'a ServiceAccountId,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.token_review(token, id))
    }
}
