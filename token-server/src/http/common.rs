//! What every handler shares: the request timeout, the served view, client authentication and
//! the response epilogue (metrics, `Cache-Control: no-store`). Siblings use it; the router
//! (`super`) only wires the handlers, so no module here depends on its parent.

use super::{client_auth, request};
use crate::state::AppState;

/// Runs a handler's work under the request timeout. `tokio::time::timeout` polls the work first
/// and only registers a timer if it is not ready, so the usual request (its body in the same
/// packets as its headers, handled in one poll) costs no timer; a layer that arms a timer per
/// request cost an extra syscall on every request (measured with strace).
pub async fn with_timeout<T>(
    st: &AppState,
    work: impl std::future::Future<Output = Result<T, crate::error::OAuthError>>,
) -> Result<T, crate::error::OAuthError> {
    let limit = st.config.request_timeout;
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(crate::error::OAuthError::Timeout {
            secs: limit.as_secs(),
        }))
}

/// The served view, or `temporarily_unavailable` before the first load.
pub fn served(
    st: &AppState,
) -> Result<std::sync::Arc<crate::state::Served>, crate::error::OAuthError> {
    st.served.load_full().ok_or_else(|| {
        crate::error::OAuthError::Unavailable(
            "the token server has not loaded its configuration yet".into(),
        )
    })
}

/// Authenticates the client of a request against `served` and counts the method used.
/// `dash_allowed`: the grant accepts a proxy key's `-` secret.
pub async fn authenticate_client(
    st: &AppState,
    served: &crate::state::Served,
    req: &request::OAuthRequest,
    now: jiff::Timestamp,
    dash_allowed: bool,
    token_request: bool,
) -> Result<crate::auth::Authenticated, crate::error::OAuthError> {
    let creds = client_auth::read(&req.headers, &req.params, req.peer.is_some())?;
    if creds.presented == crate::auth::Presented::ServiceAccount {
        return service_account(st, served, req, &creds, now, token_request).await;
    }
    let assertion = creds.presented == crate::auth::Presented::Assertion;
    let audiences = if assertion {
        assertion_audiences(&st.config.issuer)
    } else {
        Vec::new()
    };
    let remote = if assertion {
        remote_keys(st, served, &creds).await
    } else {
        None
    };
    let (mut verdict, mut outcome) = match &remote {
        Some(Err(e)) => (
            Err(crate::error::OAuthError::InvalidClient {
                description: e.to_string(),
                basic: false,
            }),
            crate::store::Outcome::Failed,
        ),
        _ => crate::auth::authenticate(crate::auth::AuthInput {
            snapshot: &served.snapshot,
            keys: &served.keys,
            creds: &creds,
            now,
            dash_allowed,
            peer: req.peer.as_deref(),
            audiences: &audiences,
            remote_keys: remote
                .as_ref()
                .and_then(|r| r.as_deref().ok())
                .map(|k| k.as_slice()),
            client_cas: &served.client_cas,
        }),
    };
    // An assertion is single-use until it expires, on every replica (the security state). A
    // replay is a failure: whoever holds a copy is not the client.
    if let Ok(a) = &verdict
        && let Some(v) = &a.assertion
    {
        let key = format!("{}\u{0}{}", a.client.client_id, v.jti);
        if !st.store.first_use(&key, v.exp, now.as_second()).await? {
            outcome = crate::store::Outcome::Failed;
            verdict = Err(crate::error::OAuthError::InvalidClient {
                description: "this client assertion was used before (its jti); sign a new one for each request".into(),
                basic: false,
            });
        }
    }
    admit(
        st,
        &creds.client_id,
        req,
        now,
        outcome,
        verdict,
        token_request,
    )
    .await
}

/// Counts an authentication under `principal` against the guessing budgets and, for a token
/// request of a client with limits, spends one of them: in one step, so a refused attempt is
/// 429 whatever the secret was (it tells a guesser nothing). Then finishes the verdict.
async fn admit(
    st: &AppState,
    principal: &str,
    req: &request::OAuthRequest,
    now: jiff::Timestamp,
    outcome: crate::store::Outcome,
    verdict: Result<crate::auth::Authenticated, crate::error::OAuthError>,
    token_request: bool,
) -> Result<crate::auth::Authenticated, crate::error::OAuthError> {
    let addr = req.addr;
    let actor = |e: &mut crate::audit::Event| {
        e.actor.client_id = Some(clip(principal).into());
        if let Ok(a) = &verdict {
            e.actor.credential = Some(crate::audit::object(&a.client.owner));
            e.actor.method = Some(a.method);
            e.target.policy = Some(crate::audit::object(&a.client.policy.owner));
        }
    };
    let limited = verdict
        .as_ref()
        .ok()
        .filter(|a| token_request && !a.client.limits.is_unlimited());
    let limits = limited.map(|a| (a.client.client_id.as_str(), &a.client.limits));
    let admitted = st
        .store
        .client_attempt(
            crate::lockout::Principal::Client(principal),
            addr,
            outcome,
            limits,
        )
        .await?;
    let remaining = match admitted {
        Ok(r) => r,
        Err(crate::store::Refusal::Guessing(r)) => {
            st.metrics.record_lockout();
            st.audit.emit(
                crate::audit::Kind::LockoutStarted,
                now,
                &req.audit_cx(),
                |e| {
                    actor(e);
                    e.outcome = "failure";
                    e.retry_after = Some(r.retry_after);
                },
            );
            return Err(crate::error::OAuthError::TooManyRequests {
                retry_after: r.retry_after,
            });
        }
        Err(crate::store::Refusal::Limited(l)) => {
            let client = limited.map(|a| &a.client);
            let policy = client.map_or_else(String::new, |c| {
                crate::store::limits::policy_header(&c.limits)
            });
            if let Some(c) = client {
                st.metrics.record_limited(
                    format!("{}/{}", c.policy.owner.namespace, c.policy.owner.name),
                    l.over.label(),
                );
            }
            st.audit
                .emit(crate::audit::Kind::RateLimited, now, &req.audit_cx(), |e| {
                    actor(e);
                    e.outcome = "failure";
                    e.reason = Some(format!("over the client's {}", l.over.label()));
                    e.retry_after = Some(l.retry_after);
                });
            return Err(crate::error::OAuthError::RateLimited {
                retry_after: l.retry_after,
                limit: l.over.label(),
                policy,
            });
        }
    };
    let charged = limited.is_some();
    if let Err(err) = &verdict {
        st.audit.emit(
            crate::audit::Kind::ClientAuthFailed,
            now,
            &req.audit_cx(),
            |e| {
                actor(e);
                e.outcome = "failure";
                e.reason = Some(format!("{}: {}", err.code(), err.description()));
            },
        );
    }
    let mut client = verdict?;
    if charged {
        client.remaining = Some(remaining);
    }
    st.metrics.record_auth(client.method);
    tracing::debug!(client_id = %client.client.client_id, method = client.method, request_id = %req.request_id, "client authenticated");
    Ok(client)
}

/// A client authenticated by its Kubernetes ServiceAccount token. The token is verified by the
/// cluster's issuer (no guessing: a forged token fails its signature), then counted like any
/// attempt, under the ServiceAccount, so a flood of bad tokens slows its sender only.
async fn service_account(
    st: &AppState,
    served: &crate::state::Served,
    req: &request::OAuthRequest,
    creds: &crate::auth::ClientCredentials,
    now: jiff::Timestamp,
    token_request: bool,
) -> Result<crate::auth::Authenticated, crate::error::OAuthError> {
    let invalid = |d: String| crate::error::OAuthError::InvalidClient {
        description: d,
        basic: false,
    };
    let Some(verifier) = &st.service_accounts else {
        return Err(invalid(
            "ServiceAccount tokens are accepted only by a token server reading the cluster (--source kube)".into(),
        ));
    };
    let token = creds.secret.as_deref().unwrap_or_default();
    let verified = verifier.verify(token).await;
    let mut verdict = verified.map_err(invalid).and_then(|id| {
        crate::auth::service_account_client(
            served.service_account_clients.get(&id),
            &creds.client_id,
            now,
        )
        .map(|a| (id, a))
    });
    // The policy may also want the API server's word (TokenReview) for each token.
    if let Ok((id, a)) = &verdict
        && a.client.policy.token_review
        && let Err(why) = verifier.review(token, id).await
    {
        verdict = Err(invalid(why));
    }
    let principal = match &verdict {
        Ok((id, _)) => format!("serviceaccount:{}/{}", id.namespace, id.name),
        Err(_) => "serviceaccount:unverified".to_owned(),
    };
    let outcome = if verdict.is_ok() {
        crate::store::Outcome::Succeeded
    } else {
        crate::store::Outcome::Failed
    };
    admit(
        st,
        &principal,
        req,
        now,
        outcome,
        verdict.map(|(_, a)| a),
        token_request,
    )
    .await
}

/// The published keys of an asserting client with a `jwksUri` (fetched or cached), or `None`
/// for a client whose keys are in its Credential (or an unknown client: nothing is fetched for
/// a client_id that names no Credential).
async fn remote_keys(
    st: &AppState,
    served: &crate::state::Served,
    creds: &crate::auth::ClientCredentials,
) -> Option<Result<crate::remote_jwks::Keys, crate::remote_jwks::FetchError>> {
    let client = served.snapshot.client(&creds.client_id)?;
    let uri = client.jwks_uri.as_ref()?;
    let assertion = creds.secret.as_deref().unwrap_or_default();
    let kid = jsonwebtoken::decode_header(assertion)
        .ok()
        .and_then(|h| h.kid);
    Some(
        st.remote_jwks
            .keys(uri, client.policy.allow_internal_jwks_uri, kid.as_deref())
            .await,
    )
}

/// A presented client_id as an audit event carries it: at most 256 bytes (ids longer than any
/// client's are an attacker's, and a log line is no place for them).
fn clip(id: &str) -> &str {
    let mut end = id.len().min(256);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

/// What a client assertion's `aud` may name: the issuer, or any endpoint URL of this server.
fn assertion_audiences(issuer: &str) -> Vec<String> {
    let base = issuer.trim_end_matches('/');
    let mut v = vec![issuer.to_owned()];
    for p in [
        "/oauth2/token",
        "/connect/token",
        "/oauth2/introspect",
        "/oauth2/revoke",
        "/credential/jwt",
        "/credential/token",
        "/auth/jwt",
        "/auth/token",
    ] {
        v.push(format!("{base}{p}"));
    }
    v
}

/// Ends a handler: counts the request and answers, with `Cache-Control: no-store` either way.
pub fn finish(
    st: &AppState,
    endpoint: &'static str,
    grant: &'static str,
    started: std::time::Instant,
    request_id: &str,
    result: Result<axum::response::Response, crate::error::OAuthError>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    st.metrics
        .record_request(endpoint, grant, result.as_ref().err(), started.elapsed());
    let mut resp = match result {
        Ok(mut resp) => {
            crate::error::no_store(resp.headers_mut());
            resp
        }
        Err(e) => {
            if let crate::error::OAuthError::ServerError(detail) = &e {
                tracing::error!(endpoint, request_id, error = %detail, "request failed");
            }
            e.into_response()
        }
    };
    // The id is made of header-safe characters only (request_id::of).
    if let Ok(v) = axum::http::HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
