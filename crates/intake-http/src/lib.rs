//! Intake's HTTP doors, served beside gRPC on every node (`--api`):
//!
//! - `/v1/…`: the JSON API, with RFC 9457 problem details ([`api`]);
//! - `/open311/v2/…`: Open311 GeoReport v2, JSON and XML ([`open311`]);
//! - `/` and `/t/{id}`: the citizen web page ([`web`]).
//!
//! None of them has logic of its own for complaints: each translates the
//! HTTP request into the gRPC request message and calls the node's own
//! `IntakeService` in-process, then translates the `tonic::Status` back. So
//! an HTTP complaint passes through exactly the validation, routing,
//! admission (emergencies first) and idempotency of a gRPC one.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use intake_core::{CategoryTable, DistrictTable};
use intake_proto::pb;
use intake_proto::pb::intake_service_server::IntakeService;
use serde::Serialize;
use tokio::net::TcpListener;

pub mod api;
pub mod body;
pub mod json;
pub mod labels;
pub mod locate;
pub mod open311;
pub mod problem;
pub mod web;

use crate::json::Accepted;
use crate::locate::Locator;
use crate::problem::Problem;

/// What every handler needs: the node's service and the tables it serves.
pub struct Door {
    service: Arc<dyn IntakeService>,
    districts: Arc<DistrictTable>,
    categories: Arc<CategoryTable>,
    locator: Locator,
}

impl Door {
    /// A door onto `service`, the same `IntakeService` the node serves over
    /// gRPC, with the district and category tables that node was started with.
    pub fn new(service: Arc<dyn IntakeService>, districts: DistrictTable, categories: CategoryTable) -> Self {
        Self {
            locator: Locator::for_table(&districts),
            service,
            districts: Arc::new(districts),
            categories: Arc::new(categories),
        }
    }

    pub fn service(&self) -> &dyn IntakeService {
        self.service.as_ref()
    }

    pub fn districts(&self) -> &DistrictTable {
        &self.districts
    }

    pub fn categories(&self) -> &CategoryTable {
        &self.categories
    }

    pub fn locator(&self) -> &Locator {
        &self.locator
    }

    /// Submits one complaint through the node's `Submit`.
    pub async fn submit(&self, complaint: pb::Complaint) -> Result<Accepted, Problem> {
        self.service
            .submit(tonic::Request::new(pb::SubmitRequest {
                complaint: Some(complaint),
            }))
            .await
            .map(|r| Accepted::from(r.into_inner()))
            .map_err(|s| Problem::from_status(&s))
    }

    /// Looks a ticket up through the node's `GetTicket` (from the leader).
    pub async fn ticket(&self, ticket_id: String) -> Result<pb::Ticket, Problem> {
        let resp = self
            .service
            .get_ticket(tonic::Request::new(pb::GetTicketRequest {
                ticket_id: ticket_id.clone(),
                local: false,
            }))
            .await
            .map_err(|s| Problem::from_status(&s))?;
        resp.into_inner()
            .ticket
            .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, format!("no ticket {ticket_id}")))
    }
}

/// Every route of the three doors. Exposed (rather than only [`serve`]) so
/// a TLS acceptor or an auth layer can wrap it.
pub fn router(door: Door) -> Router {
    let door = Arc::new(door);
    Router::new()
        .route("/", get(web::index))
        .route("/t", get(web::lookup_redirect))
        .route("/t/{id}", get(web::ticket_page))
        .route("/v1/complaints", post(api::submit))
        .route("/v1/complaints:batch", post(api::submit_batch))
        .route("/v1/tickets/{id}", get(api::get_ticket))
        .route("/v1/openapi.json", get(api::openapi))
        .route(
            "/open311/v2/{file}",
            get(open311::get_root).post(open311::post_root),
        )
        .route("/open311/v2/services/{file}", get(open311::get_service))
        .route("/open311/v2/requests/{file}", get(open311::get_request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(door)
}

/// Serves `router` on `listener` until `shutdown` resolves. Plain HTTP/1.1;
/// TLS, when it comes, wraps [`router`] instead of calling this.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn not_found(uri: axum::http::Uri) -> Response {
    Problem::new(StatusCode::NOT_FOUND, format!("no such resource: {}", uri.path())).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .into_response()
}

/// `value` as a JSON response.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        )
        .into_response(),
    }
}
