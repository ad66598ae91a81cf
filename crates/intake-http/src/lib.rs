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
//! admission (emergencies first) and idempotency of a gRPC one. Admission
//! comes first: once a body's categories are known the door asks the node
//! for the call's slot ([`Door::admit`]) before it builds the request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::Listener;
use intake_core::{CategoryTable, DistrictTable, Priority};
use intake_proto::pb;
use intake_proto::pb::intake_service_server::IntakeService;
use intake_proto::wire::{HTTP_PREVIOUS_ATTEMPTS_HEADER, HTTP_TIMEOUT_MS_HEADER, mark_retry};
use intake_server::admission::early::Admitted;
use intake_server::intake_service::IntakeServiceImpl;
use serde::Serialize;

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
    /// The node's service behind its gate: the caller's token decides.
    service: Arc<dyn IntakeService>,
    /// For the public look-ups (the web page's `/t/{id}`, Open311's
    /// `GET requests`), which take no token.
    public: Arc<dyn IntakeService>,
    /// The node's admission, asked before a body becomes a request; `None`:
    /// the service admits each call itself, after converting it.
    admission: Option<Arc<IntakeServiceImpl>>,
    districts: Arc<DistrictTable>,
    categories: Arc<CategoryTable>,
    locator: Locator,
}

impl Door {
    /// A door onto `service`, the same `IntakeService` the node serves over
    /// gRPC, with the district and category tables that node was started
    /// with. Public look-ups go to `service` too, unless
    /// [`Door::with_public_lookups`] names another.
    pub fn new(service: Arc<dyn IntakeService>, districts: DistrictTable, categories: CategoryTable) -> Self {
        Self {
            locator: Locator::for_table(&districts),
            public: service.clone(),
            service,
            admission: None,
            districts: Arc::new(districts),
            categories: Arc::new(categories),
        }
    }

    /// Where the public look-ups go: on a node with tokens, the service
    /// without its gate (they show no contact data).
    pub fn with_public_lookups(mut self, public: Arc<dyn IntakeService>) -> Self {
        self.public = public;
        self
    }

    /// Admission at the door, by the node's own rules: a submission's slot
    /// in `node`'s call pool is taken (or refused, `429` at once) as soon as
    /// its class is known, before the request is converted, validated or
    /// routed. `node` is the service behind `service`, ungated: the gate
    /// still decides the call that is let in.
    pub fn with_admission(mut self, node: Arc<IntakeServiceImpl>) -> Self {
        self.admission = Some(node);
        self
    }

    /// A slot for a submission of `class`, carried by `call` into the
    /// service; a refusal (`429` with `Retry-After`, or what else the node
    /// answers) comes back at once.
    pub fn admit(&self, call: Call, class: Priority) -> Result<Call, Problem> {
        let Some(node) = &self.admission else {
            return Ok(call);
        };
        let slot = node.admit_early(class).map_err(|s| Problem::from_status(&s))?;
        Ok(Call {
            admitted: Some(slot),
            ..call
        })
    }

    /// The class of a submission whose complaints have these categories:
    /// an emergency if any is, as the node classifies a batch.
    pub fn class_of<'a>(&self, categories: impl Iterator<Item = &'a str>) -> Priority {
        class_of(&self.categories, categories)
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

    /// Submits one complaint through the node's `Submit`, as the caller
    /// `call` describes.
    pub async fn submit(&self, call: &Call, complaint: pb::Complaint) -> Result<Accepted, Problem> {
        let req = call.request(pb::SubmitRequest {
            complaint: Some(complaint),
        });
        self.service
            .submit(req)
            .await
            .map(|r| Accepted::from(r.into_inner()))
            .map_err(|s| Problem::from_status(&s))
    }

    /// The node's `SubmitBatch`, as the caller `call` describes.
    pub async fn submit_batch(
        &self,
        call: &Call,
        complaints: Vec<pb::Complaint>,
    ) -> Result<pb::SubmitBatchResponse, Problem> {
        self.service
            .submit_batch(call.request(pb::SubmitBatchRequest { complaints }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Problem::from_status(&s))
    }

    /// Looks a ticket up through the node's `GetTicket` (from the leader),
    /// as the caller `call` describes.
    pub async fn ticket(&self, call: &Call, ticket_id: String) -> Result<pb::Ticket, Problem> {
        let req = call.request(pb::GetTicketRequest {
            ticket_id: ticket_id.clone(),
            local: false,
        });
        ticket_of(self.service.get_ticket(req).await, &ticket_id)
    }

    /// A public look-up (no token, the node's own time limit): for pages
    /// that leave the contact out.
    pub async fn public_ticket(&self, ticket_id: String) -> Result<pb::Ticket, Problem> {
        let req = tonic::Request::new(pb::GetTicketRequest {
            ticket_id: ticket_id.clone(),
            local: false,
        });
        ticket_of(self.public.get_ticket(req).await, &ticket_id)
    }
}

/// An emergency if any of `categories` is one in `table`.
fn class_of<'a>(table: &CategoryTable, mut categories: impl Iterator<Item = &'a str>) -> Priority {
    if categories.any(|c| table.priority(c) == Priority::Emergency) {
        Priority::Emergency
    } else {
        Priority::Ordinary
    }
}

fn ticket_of(
    answer: Result<tonic::Response<pb::GetTicketResponse>, tonic::Status>,
    ticket_id: &str,
) -> Result<pb::Ticket, Problem> {
    answer
        .map_err(|s| Problem::from_status(&s))?
        .into_inner()
        .ticket
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, format!("no ticket {ticket_id}")))
}

/// Header carrying the caller's timeout in milliseconds: the node answers
/// within it (a `504` a little before it runs out, as gRPC's
/// `DEADLINE_EXCEEDED`), and sheds at once what could not be done in time.
/// Without it the node's own limit applies (10 s by default).
pub const REQUEST_TIMEOUT_MS: &str = HTTP_TIMEOUT_MS_HEADER;

/// Header marking a retry: how many attempts with the same key came before
/// this one (gRPC's `grpc-previous-rpc-attempts`, gRFC A6). A node answers
/// a marked submission whose key it has applied from that record first.
pub const PREVIOUS_ATTEMPTS: &str = HTTP_PREVIOUS_ATTEMPTS_HEADER;

/// What an HTTP request tells the node besides its body, passed on as a
/// gRPC client would send it: `authorization: Bearer <token>`, the time
/// left (`grpc-timeout`), counted from the request's arrival, and the retry
/// mark; and the call's slot once the door admitted it.
#[derive(Clone)]
pub struct Call {
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    deadline: Option<Instant>,
    previous_attempts: u32,
    admitted: Option<Admitted>,
}

impl Call {
    /// The request's `Authorization` and [`REQUEST_TIMEOUT_MS`] headers;
    /// take it when the request arrives, before its body is read.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let deadline = headers
            .get(REQUEST_TIMEOUT_MS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let previous_attempts = headers
            .get(PREVIOUS_ATTEMPTS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0);
        Self {
            authorization,
            deadline,
            previous_attempts,
            admitted: None,
        }
    }

    /// A bearer token given some other way (Open311's `api_key`), used
    /// when the request has no `Authorization` header.
    pub fn or_token(mut self, token: Option<&str>) -> Self {
        if self.authorization.is_none() {
            self.authorization = token.and_then(|t| format!("Bearer {t}").parse().ok());
        }
        self
    }

    /// `msg` as an in-process call with this caller's token, time left,
    /// retry mark and slot.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(v) = &self.authorization {
            req.metadata_mut().insert("authorization", v.clone());
        }
        mark_retry(req.metadata_mut(), self.previous_attempts);
        if let Some(slot) = &self.admitted {
            slot.attach(&mut req);
        }
        if let Some(deadline) = self.deadline {
            // gRPC's form, which the service reads: "<n>m" in milliseconds.
            let left = deadline.saturating_duration_since(Instant::now()).as_millis();
            if let Ok(v) = format!("{}m", left.max(1)).parse() {
                req.metadata_mut().insert("grpc-timeout", v);
            }
        }
        req
    }
}

/// Every route of the three doors. Exposed (rather than only [`serve`]) so
/// other layers can wrap it.
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

/// Serves `router` on `listener` until `shutdown` resolves, HTTP/1.1: a
/// `TcpListener` for plain HTTP, or a listener that hands out TLS
/// connections (`intake_server::tls::HttpsListener`).
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
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

#[cfg(test)]
mod tests {
    use super::*;
    use intake_proto::wire::is_retry;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, axum::http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_retry_mark_and_the_time_left_reach_the_node_as_grpc_sends_them() {
        let call = Call::from_headers(&headers(&[
            (PREVIOUS_ATTEMPTS, "2"),
            (REQUEST_TIMEOUT_MS, "1500"),
        ]));
        let req = call.request(());
        assert!(is_retry(req.metadata()));
        assert_eq!(
            req.metadata()
                .get(intake_proto::wire::PREVIOUS_ATTEMPTS_HEADER)
                .unwrap(),
            "2"
        );
        let timeout = req.metadata().get("grpc-timeout").unwrap().to_str().unwrap();
        let ms: u64 = timeout.strip_suffix('m').unwrap().parse().unwrap();
        assert!((1..=1500).contains(&ms), "{timeout}");
    }

    #[test]
    fn a_submission_is_an_emergency_if_any_complaint_is() {
        let t = CategoryTable::default();
        assert_eq!(class_of(&t, ["noise", "flood"].into_iter()), Priority::Emergency);
        assert_eq!(class_of(&t, ["noise", "Flood"].into_iter()), Priority::Ordinary);
        assert_eq!(class_of(&t, std::iter::empty()), Priority::Ordinary);
    }

    #[test]
    fn a_first_attempt_or_a_garbled_mark_is_no_retry() {
        for h in [
            headers(&[]),
            headers(&[(PREVIOUS_ATTEMPTS, "0")]),
            headers(&[(PREVIOUS_ATTEMPTS, "many")]),
        ] {
            let req = Call::from_headers(&h).request(());
            assert!(!is_retry(req.metadata()));
            assert!(req.metadata().get("grpc-timeout").is_none());
        }
    }
}
