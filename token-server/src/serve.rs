//! The accept loop of the API and admin ports: HTTP/1.1 with a header-read timeout (a client that
//! trickles its headers is disconnected), a cap on open connections (past it the loop stops
//! accepting, so the kernel's backlog absorbs a flood instead of our file descriptors), a bounded
//! header buffer, strict CRLF line endings, a required `Host`, TCP_NODELAY, the peer address for
//! the handlers, TLS termination, and graceful shutdown.
//!
//! Cost note: a timer armed per request makes tokio wake its I/O driver (an eventfd write, one
//! syscall per request) whenever that timer becomes the runtime's earliest deadline. A heartbeat
//! timer that is always earlier keeps the per-connection header timers from ever being first.

use crate::mtls::PeerCert;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often the heartbeat ticks; must stay well below the header timeout.
const HEARTBEAT: Duration = Duration::from_millis(250);
/// Largest request head (request line and headers). Nothing we serve needs more; hyper's default
/// (~400 KiB) let a 200 KB `Authorization` header reach the handlers.
pub const MAX_HEAD: usize = 32 * 1024;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send the request head (and to finish a TLS handshake).
    pub header_timeout: Duration,
    /// Most connections open at once on this listener.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` turns true, then waits for open requests.
/// With `tls`, connections are TLS (the newest configuration at each handshake); a handshake must
/// finish within `limits.header_timeout` too.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<crate::tls::SharedConfig>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let header_timeout = limits.header_timeout;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let heartbeat = tokio::spawn(async {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
        }
    });
    // Its guard is dropped at once, so this future stays Send.
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    loop {
        // At the cap, wait for a connection to close before accepting the next: a flood of idle
        // connections then waits in the kernel's backlog and cannot exhaust file descriptors.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        let svc = service(router.clone(), addr, None);
                        let conn = graceful.watch(builder.serve_connection(TokioIo::new(StrictLines::new(stream)), svc));
                        // Errors here are clients going away or timing out; nothing to report.
                        tokio::spawn(async move {
                            let _ = conn.await;
                            drop(slot);
                        });
                    }
                    Some(config) => {
                        let state = config.load_full();
                        let acceptor = tokio_rustls::TlsAcceptor::from(state.server.clone());
                        let (builder, watcher, router) = (builder.clone(), graceful.watcher(), router.clone());
                        tokio::spawn(async move {
                            // A client that never finishes its handshake, or sends garbage, only
                            // loses its own connection.
                            let Ok(Ok(stream)) = tokio::time::timeout(header_timeout, acceptor.accept(stream)).await else {
                                return;
                            };
                            let peer = peer_cert(&state, stream.get_ref().1.peer_certificates());
                            let svc = service(router, addr, peer);
                            let _ = watcher.watch(builder.serve_connection(TokioIo::new(StrictLines::new(stream)), svc)).await;
                            drop(slot);
                        });
                    }
                }
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    heartbeat.abort();
}

/// Refuses what hyper accepts but RFC 9112 does not want served: a request without exactly one
/// `Host` (§3.2; HTTP/1.0 included, as no client of ours lacks one) is a 400.
fn refuse(req: &axum::http::Request<Incoming>) -> Option<axum::response::Response> {
    use axum::response::IntoResponse as _;
    let hosts = req
        .headers()
        .get_all(axum::http::header::HOST)
        .iter()
        .count();
    (hosts != 1).then(|| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "error": "invalid_request",
                "error_description": "the request must have exactly one Host header",
            })),
        )
            .into_response()
    })
}

/// The router with the connection's peer address and client certificate in every request.
fn service(
    router: Router,
    addr: std::net::SocketAddr,
    peer: Option<Arc<PeerCert>>,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
        axum::http::Request<Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone,
> {
    let inner =
        tower::ServiceExt::map_request(router, move |mut req: axum::http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(addr));
            if let Some(p) = &peer {
                req.extensions_mut().insert(p.clone());
            }
            req
        });
    hyper_util::service::TowerToHyperService::new(tower::service_fn(
        move |req: axum::http::Request<Incoming>| {
            let refused = refuse(&req);
            let inner = inner.clone();
            async move {
                match refused {
                    Some(r) => Ok(r),
                    None => tower::ServiceExt::oneshot(inner, req).await,
                }
            }
        },
    ))
}

/// A stream whose reads turn every LF not preceded by CR into a NUL. RFC 9112 §2.2 lets a server
/// accept a bare LF as a line end, and hyper does; a proxy in front that does not would frame the
/// request differently (a smuggling vector). A NUL is invalid in a request head, so hyper answers
/// 400, and in a form body, so the form parser refuses it: nothing we serve has a bare LF.
pub struct StrictLines<S> {
    inner: S,
    last: u8,
}

impl<S> StrictLines<S> {
    /// Wraps a connection.
    pub fn new(inner: S) -> Self {
        Self { inner, last: 0 }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StrictLines<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            let mut last = self.last;
            for b in &mut buf.filled_mut()[before..] {
                if *b == b'\n' && last != b'\r' {
                    *b = 0;
                }
                last = *b;
            }
            self.last = last;
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StrictLines<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What authentication needs of the client's certificate: the leaf parsed, and whether the chain
/// leads to the client CA.
fn peer_cert(
    state: &crate::tls::TlsState,
    chain: Option<&[rustls_pki_types::CertificateDer<'static>]>,
) -> Option<Arc<PeerCert>> {
    let chain = chain?;
    let leaf = chain.first()?;
    let ca_verified = state.client_ca.as_ref().is_some_and(|v| {
        v.verify_client_cert(leaf, &chain[1..], rustls_pki_types::UnixTime::now())
            .is_ok()
    });
    PeerCert::parse(chain, ca_verified).map(Arc::new)
}
