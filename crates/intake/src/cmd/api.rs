//! The HTTP doors (`--api`): JSON API, Open311 and the citizen web page,
//! served by `intake-http` over this node's own `IntakeService`.

use std::net::SocketAddr;

use anyhow::Context;
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
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--api {addr}: cannot listen"))?;
    let door = intake_http::Door::new(node.intake_service(), districts, categories);
    let router = intake_http::router(door);
    tracing::info!(%addr, "HTTP API, Open311 and web page");
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = intake_http::serve(listener, router, shutdown).await {
            tracing::warn!(error = %e, "HTTP API stopped");
        }
    }))
}
