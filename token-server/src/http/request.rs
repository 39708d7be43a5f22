//! Reading an OAuth request: method, content type, size limit, and strict form decoding.

use crate::error::OAuthError;
use crate::form::Params;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, Method, header};
use std::net::{IpAddr, SocketAddr};

/// A decoded request.
pub struct OAuthRequest {
    /// Parameters, from the form body (POST) or the query (GET).
    pub params: Params,
    /// Headers.
    pub headers: HeaderMap,
    /// The source address, when served over a socket: the peer, or the client a trusted proxy
    /// names.
    pub addr: Option<IpAddr>,
    /// The parameters came in the URL (GET); allowed only where the client's policy says so.
    pub via_query: bool,
    /// The client certificate of the TLS connection, if any.
    pub peer: Option<std::sync::Arc<crate::mtls::PeerCert>>,
    /// The request id (echoed in `X-Request-Id`, carried by audit events).
    pub request_id: std::sync::Arc<str>,
}

impl OAuthRequest {
    /// What an audit event says of this request.
    pub fn audit_cx(&self) -> crate::audit::RequestCx {
        crate::audit::RequestCx {
            request_id: Some(self.request_id.clone()),
            source: self.addr,
        }
    }
}

/// How much of a body over the limit is read and thrown away before the 413: a client that
/// writes its whole body before it reads (most do) then reads the answer, instead of a reset
/// (over TLS, a TLS error) when the server closes with its bytes unread. Bounded, and under the
/// request timeout like every read.
pub const DISCARD_MAX: usize = 1 << 20;

/// The body, at most `limit` bytes; a longer one is discarded (up to [`DISCARD_MAX`]) and 413.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Vec<u8>, OAuthError> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|_| OAuthError::InvalidRequest("the request body could not be read".into()))?;
        if buf.len() + chunk.len() > limit {
            discard(stream, buf.len() + chunk.len()).await;
            return Err(OAuthError::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Reads and drops the rest of a body until [`DISCARD_MAX`] bytes have been seen in all.
async fn discard(mut stream: axum::body::BodyDataStream, mut seen: usize) {
    use futures::StreamExt as _;
    while seen <= DISCARD_MAX {
        match stream.next().await {
            Some(Ok(b)) => seen += b.len(),
            _ => return,
        }
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Reads the request. `allow_get` is true on the token endpoints (the policy then decides).
/// `trusted_proxies`: peers whose `Forwarded` / `X-Forwarded-For` name the source address.
pub async fn read(
    req: Request,
    limit: usize,
    allow_get: bool,
    trusted_proxies: &[ipnet::IpNet],
) -> Result<OAuthRequest, OAuthError> {
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| super::source::client_address(c.0.ip(), req.headers(), trusted_proxies));
    let peer = req
        .extensions()
        .get::<std::sync::Arc<crate::mtls::PeerCert>>()
        .cloned();
    let request_id = match req.extensions().get::<super::request_id::RequestId>() {
        Some(r) => r.0.clone(),
        None => super::request_id::of(req.headers()),
    };
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or_default();
    match parts.method {
        Method::POST => {
            if !query.is_empty() {
                return Err(OAuthError::InvalidRequest(
                    "parameters in the URL are not accepted with POST; send them in the form body"
                        .into(),
                ));
            }
            if !is_form(&parts.headers) {
                return Err(OAuthError::InvalidRequest(
                    "the body must be sent with Content-Type: application/x-www-form-urlencoded"
                        .into(),
                ));
            }
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(n) = declared.filter(|n| *n > limit as u64) {
                // Past the discard bound, answer at once: the connection closes under a client
                // still writing, which is the price of not reading megabytes for nobody.
                if n <= DISCARD_MAX as u64 {
                    discard(body.into_data_stream(), 0).await;
                }
                return Err(OAuthError::PayloadTooLarge { limit });
            }
            let bytes = read_body(body, limit).await?;
            Ok(OAuthRequest {
                params: Params::parse(&bytes)?,
                headers: parts.headers,
                addr,
                via_query: false,
                peer,
                request_id,
            })
        }
        Method::GET if allow_get => {
            if query.len() > limit {
                return Err(OAuthError::PayloadTooLarge { limit });
            }
            Ok(OAuthRequest {
                params: Params::parse(query.as_bytes())?,
                headers: parts.headers,
                addr,
                via_query: true,
                peer,
                request_id,
            })
        }
        _ => Err(OAuthError::MethodNotAllowed(if allow_get {
            "POST (or GET where the policy allows URL parameters)"
        } else {
            "POST"
        })),
    }
}
