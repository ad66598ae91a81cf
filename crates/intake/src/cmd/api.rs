//! The HTTP doors (`--api`): JSON API, Open311 and the citizen web page,
//! served by `intake-http` over this node's own `IntakeService`.

use std::net::SocketAddr;

use anyhow::Context;
use axum::serve::ListenerExt;
use intake_core::{CategoryTable, DistrictTable};
use intake_server::Node;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Binds `addr` and serves the doors until `stop` turns true.
pub async fn start(
    addr: SocketAddr,
    node: &Node,
    districts: DistrictTable,
    categories: CategoryTable,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = listen(addr).with_context(|| format!("--api {addr}: cannot listen"))?;
    // Behind the gRPC port's gate (tokens, roles, channels, rate limits);
    // the public look-ups (web page, Open311 `GET requests`) need none.
    // Submissions are admitted by the node's rules as soon as their class is
    // known, before the door builds the request.
    let door = intake_http::Door::new(node.gated_intake_service(), districts, categories)
        .with_public_lookups(node.intake_service())
        .with_admission(node.intake_service());
    let router = intake_http::router(door);
    let tls = node.tls().cloned();
    tracing::info!(%addr, tls = tls.is_some(), "HTTP API, Open311 and web page");
    let stopped = stop.clone();
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let served = match tls {
            // The gRPC port's certificates, reloaded in place.
            Some(tls) => match intake_server::tls::HttpsListener::new(listener, tls, stopped) {
                Ok(l) => intake_http::serve(l, router, shutdown).await,
                Err(e) => Err(e),
            },
            None => {
                // Small answers must not wait out Nagle and delayed ACKs.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                intake_http::serve(listener, router, shutdown).await
            }
        };
        if let Err(e) = served {
            tracing::warn!(error = %e, "HTTP API stopped");
        }
    }))
}

/// Connections the kernel queues for `accept` beyond those accepted (capped
/// by `net.core.somaxconn`). HTTP/1.1 clients open a connection per call in
/// flight, so a surge arrives as a burst of new connections; with tokio's
/// default (1,024) a 5x surge on a loaded machine dropped 8,543 SYNs in 8 s
/// (docs/benchmarks.md), and a client sends a dropped SYN again only after
/// a second, half of a 2 s deadline.
const ACCEPT_BACKLOG: u32 = 8192;

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}
