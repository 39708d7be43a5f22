//! The token endpoints: `/oauth2/token` (and `/connect/token`) for every client, and the
//! gateway-compatible `/auth/{jwt,token}` (proxy keys) and `/credential/{jwt,token}` (Credentials).
//!
//! extract (limits, form) → authenticate client → check endpoint, method, grant → grant → respond

use super::request;
use crate::error::OAuthError;
use crate::grant::{GrantCtx, client_credentials, password, refresh_token, response};
use crate::state::AppState;
use crate::store::Outcome;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tessera_crds::auth_policy::{GrantType, TokenType};
use tessera_crds::model::{Client, ClientKind, Limits};

/// Which token endpoint was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/oauth2/token`, `/connect/token`: any client.
    OAuth2,
    /// `/auth/jwt`: proxy keys of JWT policies.
    AuthJwt,
    /// `/auth/token`: proxy keys of OAuth2 (opaque) policies.
    AuthToken,
    /// `/credential/jwt`: Credentials of JWT policies.
    CredentialJwt,
    /// `/credential/token`: Credentials of OAuth2 policies.
    CredentialToken,
}

impl Endpoint {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::OAuth2 => "/oauth2/token",
            Endpoint::AuthJwt => "/auth/jwt",
            Endpoint::AuthToken => "/auth/token",
            Endpoint::CredentialJwt => "/credential/jwt",
            Endpoint::CredentialToken => "/credential/token",
        }
    }

    /// Refuses a client this gateway-compatible endpoint does not serve.
    fn admits(self, client: &Client) -> Result<(), OAuthError> {
        let (kind, token_type) = match self {
            Endpoint::OAuth2 => return Ok(()),
            Endpoint::AuthJwt => (ClientKind::ProxyKey, TokenType::Jwt),
            Endpoint::AuthToken => (ClientKind::ProxyKey, TokenType::OAuth2),
            Endpoint::CredentialJwt => (ClientKind::Credential, TokenType::Jwt),
            Endpoint::CredentialToken => (ClientKind::Credential, TokenType::OAuth2),
        };
        let right = |k: ClientKind, t: TokenType| match (k, t) {
            (ClientKind::ProxyKey, TokenType::Jwt) => "/auth/jwt",
            (ClientKind::ProxyKey, TokenType::OAuth2) => "/auth/token",
            (ClientKind::Credential, TokenType::Jwt) => "/credential/jwt",
            (ClientKind::Credential, TokenType::OAuth2) => "/credential/token",
        };
        if client.kind != kind || client.policy.token_type != token_type {
            return Err(OAuthError::UnauthorizedClient(format!(
                "this endpoint serves {} clients of {} policies; this client uses {} (or /oauth2/token)",
                if kind == ClientKind::ProxyKey {
                    "proxy-key"
                } else {
                    "Credential"
                },
                if token_type == TokenType::Jwt {
                    "JWT"
                } else {
                    "OAuth2"
                },
                right(client.kind, client.policy.token_type)
            )));
        }
        Ok(())
    }
}

/// The handler.
pub async fn handle(State(st): State<AppState>, endpoint: Endpoint, mut req: Request) -> Response {
    let started = Instant::now();
    let request_id = super::request_id::tag(&mut req);
    let mut grant_label = "none";
    let mut limits = None;
    let result = super::common::with_timeout(
        &st,
        process(&st, endpoint, req, &mut grant_label, &mut limits),
    )
    .await;
    let mut resp = super::common::finish(
        &st,
        endpoint.label(),
        grant_label,
        started,
        &request_id,
        result.map(|body| axum::Json(body).into_response()),
    );
    // A limited client learns what is left (draft-ietf-httpapi-ratelimit-headers).
    if let Some((l, r)) = limits {
        let h = resp.headers_mut();
        for (name, v) in [
            ("ratelimit-policy", crate::store::limits::policy_header(&l)),
            ("ratelimit", crate::store::limits::remaining_header(&l, &r)),
        ] {
            if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
                h.insert(name, v);
            }
        }
    }
    resp
}

async fn process(
    st: &AppState,
    endpoint: Endpoint,
    req: Request,
    grant_label: &mut &'static str,
    limits: &mut Option<(Limits, crate::store::Remaining)>,
) -> Result<serde_json::Value, OAuthError> {
    let served = super::common::served(st)?;
    let req = request::read(req, st.config.body_limit, true, &st.config.trusted_proxies).await?;
    let grant = match req.params.require("grant_type")? {
        "client_credentials" => GrantType::ClientCredentials,
        "password" => GrantType::Password,
        "refresh_token" => GrantType::RefreshToken,
        other => {
            return Err(OAuthError::UnsupportedGrantType(format!(
                "`{}` is not supported; use client_credentials, password or refresh_token",
                other.chars().take(64).collect::<String>()
            )));
        }
    };
    *grant_label = grant.as_str();
    let now = (st.clock)();
    let auth = super::common::authenticate_client(
        st,
        &served,
        &req,
        now,
        grant != GrantType::ClientCredentials,
        true,
    )
    .await?;
    let client = auth.client;
    let method = auth.method;
    *limits = auth.remaining.map(|r| (client.limits, r));
    if req.via_query && !client.policy.allow_url_parameters {
        return Err(OAuthError::InvalidRequest(
            "this client's policy does not allow URL parameters; POST a form body (credentials in URLs end up in logs)".into(),
        ));
    }
    endpoint.admits(&client)?;
    if !client.policy.allows_grant(grant) {
        return Err(OAuthError::UnauthorizedClient(format!(
            "this client's policy does not allow the {} grant",
            grant.as_str()
        )));
    }
    let cx = GrantCtx {
        served: &served,
        client: &client,
        params: &req.params,
        issuer: &st.config.issuer,
        now,
        store: &st.store,
        // RFC 8705 §3: a client that authenticated with its certificate gets tokens bound to it.
        cnf: auth
            .cnf
            .map(|x5t_s256| crate::token::claims::Confirmation { x5t_s256 }),
    };
    let issued = match grant {
        GrantType::ClientCredentials => client_credentials::grant(&cx)?,
        GrantType::RefreshToken => {
            let mut reused = None;
            let r = refresh_token::grant(&cx, &mut reused).await;
            if let Some(chain) = reused {
                st.audit.emit(
                    crate::audit::Kind::RefreshReuse,
                    now,
                    &req.audit_cx(),
                    |ev| {
                        ev.outcome = "failure";
                        ev.by_client(&client, Some(method));
                        ev.target.grant = Some("refresh_token");
                        ev.target.token_id = Some(chain);
                        ev.reason = Some(
                            "a rotated refresh token was presented again; its chain is revoked"
                                .into(),
                        );
                    },
                );
            }
            r?
        }
        GrantType::Password => {
            let (username, pw) = password::read_user(&req.params)?;
            // Users get the guessing budget clients get (RFC 6749 §4.3.2), per (client, user,
            // source): guessing one user's password from one place slows down that guesser
            // only. The attempt counts before the hash runs, so a burst cannot all pass.
            let principal = crate::lockout::Principal::User {
                client_id: &client.client_id,
                username: &username,
            };
            let ticket = st.store.begin(principal, req.addr).await?.map_err(|r| {
                OAuthError::TooManyRequests {
                    retry_after: r.retry_after,
                }
            })?;
            let ok = st
                .passwords
                .verify(client.policy.users.clone(), username.clone(), pw)
                .await?;
            if !ok {
                st.store.finish(ticket, Outcome::Failed).await;
                st.audit.emit(
                    crate::audit::Kind::UserAuthFailed,
                    now,
                    &req.audit_cx(),
                    |e| {
                        e.outcome = "failure";
                        e.by_client(&client, None);
                        e.actor.user = Some(username.chars().take(256).collect());
                        e.target.grant = Some("password");
                        e.reason = Some("invalid_grant: the username or password is wrong".into());
                    },
                );
                return Err(OAuthError::InvalidGrant(
                    "the username or password is wrong".into(),
                ));
            }
            st.store.finish(ticket, Outcome::Succeeded).await;
            password::grant(&cx, username)?
        }
    };
    let body = response::body(&client.policy.token_management, &issued);
    // The event takes what it names from `issued`, after the body is built: no copies.
    let crate::grant::Issued {
        token_id,
        audience,
        scope,
        username,
        expires_in,
        ..
    } = issued;
    st.audit
        .emit(crate::audit::Kind::TokenIssued, now, &req.audit_cx(), |e| {
            e.by_client(&client, Some(method));
            e.actor.user = username;
            e.target.grant = Some(grant.as_str());
            e.target.audience = audience;
            e.target.scope = scope;
            e.target.token_type = Some(match client.policy.token_type {
                TokenType::Jwt => "jwt",
                TokenType::OAuth2 => "opaque",
            });
            e.target.token_id = Some(token_id);
            e.target.expires_in = expires_in;
        });
    Ok(body)
}
