//! The node's HTTP side (`--http`): `/metrics` for Prometheus, and `/ops`,
//! the operations room's wall: every district's live rate against its
//! baseline, the surges in progress and recent alerts, the largest open
//! incidents, and each shard's leader and dispatch lag. The page is one
//! embedded HTML file (no external assets, works offline on a wall screen)
//! that polls `/ops/state.json` every second.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router as HttpRouter;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use intake_core::DistrictTable;
use intake_proto::pb;
use intake_proto::pb::admin_service_server::AdminService;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin_service::AdminServiceImpl;
use crate::surge_watch::SurgeWatch;

const PAGE: &str = include_str!("ops.html");

/// What the handlers read.
#[derive(Clone)]
pub struct OpsState {
    pub metrics: PrometheusHandle,
    pub surges: SurgeWatch,
    pub admin: Arc<AdminServiceImpl>,
    pub districts: Arc<DistrictTable>,
    pub node_id: u64,
}

/// Serves `/metrics`, `/ops` and `/ops/state.json` on `listener` until `stop`.
pub fn spawn(listener: TcpListener, state: OpsState, mut stop: watch::Receiver<bool>) {
    let app = HttpRouter::new()
        .route("/metrics", get(metrics))
        .route("/ops", get(page))
        .route("/ops/state.json", get(ops_state))
        .with_state(state);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "the --http server stopped");
        }
    });
}

/// Binds `addr` for [`spawn`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn metrics(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

fn millis(ts: Option<&intake_proto::Timestamp>) -> i64 {
    ts.map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

async fn ops_state(State(s): State<OpsState>) -> impl IntoResponse {
    let rates = s.surges.district_rates();
    let districts: Vec<Value> = s
        .districts
        .iter()
        .map(|d| {
            let r = rates.iter().find(|r| r.district == d.code);
            json!({
                "code": d.code,
                "name": d.name_en,
                "name_zh": d.name_zh,
                "rate": r.map_or(0.0, |r| r.rate),
                "baseline": r.map_or(0.0, |r| r.baseline),
            })
        })
        .collect();
    let status = s
        .admin
        .cluster_status(tonic::Request::new(pb::ClusterStatusRequest { local: false }))
        .await
        .map(|r| r.into_inner())
        .unwrap_or_default();
    let mut incidents: Vec<&pb::Incident> = status.shards.iter().flat_map(|sh| &sh.incidents).collect();
    incidents.sort_by(|a, b| b.complaints.cmp(&a.complaints).then(a.id.cmp(&b.id)));
    let body = json!({
        "node": s.node_id,
        "now": crate::convert::now_millis(),
        "districts": districts,
        "surges": s.surges.active(),
        "recent": s.surges.recent(),
        "incidents": incidents.iter().take(8).map(|i| json!({
            "id": i.id,
            "district": i.district,
            "category": i.category,
            "complaints": i.complaints,
            "first_at": millis(i.first_at.as_ref()),
            "last_at": millis(i.last_at.as_ref()),
        })).collect::<Vec<_>>(),
        "nodes": status.nodes.iter().map(|n| json!({"id": n.id, "addr": n.addr, "up": n.up})).collect::<Vec<_>>(),
        "shards": status.shards.iter().map(|sh| {
            let lag = sh.dispatch_lag.clone().unwrap_or_default();
            json!({
                "id": sh.id,
                "leader": sh.leader,
                "districts": sh.districts,
                "lag_tickets": lag.tickets,
                "lag_seconds": lag.seconds,
                "dispatch": lag.state,
            })
        }).collect::<Vec<_>>(),
    });
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body))
}
