//! `/v1`: the JSON API. Each handler turns the HTTP request into the gRPC
//! request message and calls the node's `IntakeService` in-process, so
//! validation, routing, admission and idempotency are the gRPC door's own.
//! A submission is admitted as soon as its body is parsed, by the
//! categories in it, so a surge's refusals cost no conversion or validation.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use intake_proto::pb;

use crate::body::{self, MAX_BATCH_BYTES, MAX_SINGLE_BYTES};
use crate::json::{Accepted, BatchIn, BatchItem, BatchOut, ComplaintIn, TicketOut};
use crate::problem::{Problem, Violation};
use crate::{Call, Door, json_response};

/// Header carrying the idempotency key (IETF draft `Idempotency-Key`).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The checked-in OpenAPI document of this API.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// `POST /v1/complaints`.
pub async fn submit(State(door): State<Arc<Door>>, headers: HeaderMap, body: Body) -> Response {
    answer(submit_inner(&door, &headers, body).await)
}

async fn submit_inner(door: &Door, headers: &HeaderMap, body: Body) -> Result<Response, Problem> {
    // Before the body: the caller's time runs from its arrival.
    let call = Call::from_headers(headers);
    body::require_json(headers)?;
    let bytes = body::read(headers, body, MAX_SINGLE_BYTES).await?;
    let mut c: ComplaintIn = body::parse(&bytes)?;
    // Admitted by its category before anything else is built (the body is
    // parsed once: benches/http_classify.rs).
    let call = door.admit(call, door.class_of(std::iter::once(c.category.as_str())))?;
    c.idempotency_key = merge_key(header_key(headers)?, std::mem::take(&mut c.idempotency_key))?;
    let complaint = c
        .into_pb("")
        .map_err(|v| Problem::invalid(v.description.clone(), vec![v]))?;
    let accepted = door.submit(&call, complaint).await?;
    let location = format!("/v1/tickets/{}", accepted.ticket_id);
    let mut resp = json_response(StatusCode::CREATED, &accepted);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// `POST /v1/complaints:batch`: one result per complaint, in order. The call
/// as a whole fails only when it cannot be read or is refused before any
/// item is looked at (e.g. the node sheds it).
pub async fn submit_batch(State(door): State<Arc<Door>>, headers: HeaderMap, body: Body) -> Response {
    answer(batch_inner(&door, &headers, body).await)
}

async fn batch_inner(door: &Door, headers: &HeaderMap, body: Body) -> Result<Response, Problem> {
    let call = Call::from_headers(headers);
    body::require_json(headers)?;
    let bytes = body::read(headers, body, MAX_BATCH_BYTES).await?;
    let batch: BatchIn = body::parse(&bytes)?;
    let call = door.admit(
        call,
        door.class_of(batch.complaints.iter().map(|c| c.category.as_str())),
    )?;
    let mut complaints = Vec::with_capacity(batch.complaints.len());
    let mut bad = Vec::new();
    for (i, c) in batch.complaints.into_iter().enumerate() {
        match c.into_pb(&format!("complaints[{i}].")) {
            Ok(c) => complaints.push(c),
            Err(v) => bad.push(v),
        }
    }
    if !bad.is_empty() {
        return Err(Problem::invalid("some complaints have malformed fields", bad));
    }
    let resp = door.submit_batch(&call, complaints).await?;
    let results = resp
        .results
        .into_iter()
        .map(|r| match r.outcome {
            Some(pb::submit_result::Outcome::Accepted(ok)) => BatchItem {
                accepted: Some(Accepted::from(ok)),
                error: None,
            },
            Some(pb::submit_result::Outcome::Error(e)) => BatchItem {
                accepted: None,
                error: Some(item_problem(e)),
            },
            None => BatchItem {
                accepted: None,
                error: Some(Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no result for this item",
                )),
            },
        })
        .collect();
    Ok(json_response(StatusCode::OK, &BatchOut { results }))
}

/// A batch item's error as the problem the unary call would have answered.
fn item_problem(e: pb::ItemError) -> Problem {
    let code = tonic::Code::from_i32(e.code);
    let mut p = Problem::from_status(&tonic::Status::new(code, e.message));
    p.violations = e
        .field_violations
        .into_iter()
        .map(|v| Violation {
            field: v.field,
            description: v.description,
        })
        .collect();
    if e.retry_after_ms > 0 {
        p.retry_after_ms = Some(e.retry_after_ms);
    }
    p
}

/// `GET /v1/tickets/{id}`.
pub async fn get_ticket(
    State(door): State<Arc<Door>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return Problem::field("ticket_id", e.body_text()).into_response(),
    };
    answer(
        door.ticket(&Call::from_headers(&headers), id)
            .await
            .map(|t| json_response(StatusCode::OK, &TicketOut::from(t))),
    )
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

fn answer(r: Result<Response, Problem>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The `Idempotency-Key` header, if sent.
fn header_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_string()))
            .map_err(|_| Problem::field("Idempotency-Key", "must be visible ASCII")),
    }
}

/// The key from the header or the body; both may be given if they agree.
fn merge_key(header: Option<String>, body: String) -> Result<String, Problem> {
    match header {
        Some(h) if !body.is_empty() && h != body => Err(Problem::field(
            "idempotency_key",
            "differs from the Idempotency-Key header; send one key, or the same in both",
        )),
        Some(h) => Ok(h),
        None => Ok(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_body_keys_must_agree() {
        assert_eq!(merge_key(Some("a".into()), String::new()).unwrap(), "a");
        assert_eq!(merge_key(None, "b".into()).unwrap(), "b");
        assert_eq!(merge_key(Some("a".into()), "a".into()).unwrap(), "a");
        assert_eq!(merge_key(Some("a".into()), "b".into()).unwrap_err().status, 400);
    }

    #[test]
    fn the_openapi_document_is_json() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(v["openapi"].as_str().unwrap(), "3.1.0");
    }
}
