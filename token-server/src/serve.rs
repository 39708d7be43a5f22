//! The API's accept loop: HTTP/1.1 with a header-read timeout (a client that trickles its
//! headers is disconnected), TCP_NODELAY, the peer address for the handlers, and graceful
//! shutdown. This is also where TLS will be terminated.
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

/// Serves `router` on `listener` until `shutdown` turns true, then waits for open requests.
/// With `tls`, connections are TLS (the newest configuration at each handshake); a handshake must
/// finish within `header_timeout` too.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    tls: Option<crate::tls::SharedConfig>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
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
        .keep_alive(true);
    loop {
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
                        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
                        // Errors here are clients going away or timing out; nothing to report.
                        tokio::spawn(async move {
                            let _ = conn.await;
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
                            let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), svc)).await;
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
    hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
        router,
        move |mut req: axum::http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(addr));
            if let Some(p) = &peer {
                req.extensions_mut().insert(p.clone());
            }
            req
        },
    ))
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
