//! `--protocol http`: the same load through the nodes' HTTP/JSON door
//! (`/v1/complaints`, `/v1/complaints:batch`), so its figures stand beside
//! gRPC's. Answers are translated back to the gRPC codes the engine counts:
//! a problem document carries its gRPC `code` and `retry_after_ms`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use intake_proto::pb;
use intake_proto::wire::{HTTP_PREVIOUS_ATTEMPTS_HEADER, HTTP_TIMEOUT_MS_HEADER};
use serde_json::{Value, json};
use tonic::Code;

/// Per complaint: its ticket id, or the code (and retry delay) refusing it.
pub type Answers = Vec<Result<String, (Code, Option<Duration>)>>;

/// Pooled HTTP/1.1 keep-alive connections to each node's door.
pub struct HttpDoors {
    client: Client<HttpConnector, Full<Bytes>>,
    bases: Vec<String>,
}

impl HttpDoors {
    /// `endpoints` are the doors' HOST:PORT, in the gRPC endpoints' order.
    pub fn new(endpoints: &[String]) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let bases = endpoints
            .iter()
            .map(|e| {
                if e.starts_with("http://") {
                    e.trim_end_matches('/').to_string()
                } else {
                    format!("http://{}", e.trim_end_matches('/'))
                }
            })
            .collect();
        Self { client, bases }
    }

    pub fn len(&self) -> usize {
        self.bases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// One call to door `at`, given `timeout` (the attempt's limit within
    /// the deadline), marked as a retry after `previous_attempts` as the
    /// gRPC calls are; `Err` when the whole call failed (a status the engine
    /// treats as gRPC's, "tcp connect error" when never sent).
    pub async fn send(
        &self,
        at: usize,
        batch: bool,
        complaints: Vec<pb::Complaint>,
        timeout: Duration,
        previous_attempts: u32,
    ) -> Result<Answers, tonic::Status> {
        // As the gRPC calls: the node's limit is the attempt's; this one
        // also covers a call that waited for a connection.
        let deadline = Instant::now() + timeout + Duration::from_millis(50);
        let n = complaints.len();
        let (path, body) = if batch {
            let items: Vec<Value> = complaints.iter().map(complaint_json).collect();
            ("/v1/complaints:batch", json!({ "complaints": items }))
        } else {
            let c = complaints.first().map(complaint_json).unwrap_or(Value::Null);
            ("/v1/complaints", c)
        };
        let base = self
            .bases
            .get(at)
            .ok_or_else(|| tonic::Status::internal("no such door"))?;
        // The attempt's time, so the node answers (or sheds) within it, as
        // gRPC's grpc-timeout tells it.
        let mut req = http::Request::post(format!("{base}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(HTTP_TIMEOUT_MS_HEADER, timeout.as_millis().max(1).to_string());
        if previous_attempts > 0 {
            req = req.header(HTTP_PREVIOUS_ATTEMPTS_HEADER, previous_attempts.to_string());
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let resp = match tokio::time::timeout(left, self.client.request(req)).await {
            Err(_) => return Err(tonic::Status::deadline_exceeded("no answer before the deadline")),
            Ok(Err(e)) if e.is_connect() => {
                return Err(tonic::Status::unavailable(format!("tcp connect error: {e}")));
            }
            Ok(Err(e)) => return Err(tonic::Status::unknown(format!("HTTP: {e}"))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let left = deadline.saturating_duration_since(Instant::now());
        let bytes = match tokio::time::timeout(left, resp.into_body().collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => return Err(tonic::Status::unknown(format!("HTTP body: {e}"))),
            Err(_) => return Err(tonic::Status::deadline_exceeded("no answer before the deadline")),
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !batch {
            return Ok(vec![if status == 201 {
                v["ticket_id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or((Code::Internal, None))
            } else {
                Err(refusal(&v))
            }]);
        }
        if status != 200 {
            return Ok(vec![Err(refusal(&v)); n]);
        }
        let mut answers: Answers = v["results"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|r| match r["accepted"]["ticket_id"].as_str() {
                        Some(id) => Ok(id.to_string()),
                        None => Err(refusal(&r["error"])),
                    })
                    .collect()
            })
            .unwrap_or_default();
        answers.resize(n, Err((Code::Internal, None)));
        Ok(answers)
    }
}

/// A problem document's gRPC code and retry delay.
fn refusal(problem: &Value) -> (Code, Option<Duration>) {
    let code = match problem["code"].as_str().unwrap_or("") {
        "INVALID_ARGUMENT" => Code::InvalidArgument,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "UNAVAILABLE" => Code::Unavailable,
        "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
        "NOT_FOUND" => Code::NotFound,
        "CANCELLED" => Code::Cancelled,
        "FAILED_PRECONDITION" => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    let after = problem["retry_after_ms"].as_u64().map(Duration::from_millis);
    (code, after)
}

/// The JSON API's form of a complaint (the proto's field names).
fn complaint_json(c: &pb::Complaint) -> Value {
    let mut v = json!({
        "idempotency_key": c.idempotency_key,
        "channel": c.channel,
        "district_code": c.district_code,
        "category": c.category,
        "text": c.text,
        "contact": c.contact,
    });
    if let Some(l) = &c.location {
        v["location"] = json!({ "lat": l.lat, "lon": l.lon, "address": l.address });
    }
    if !c.attachment_urls.is_empty() {
        v["attachment_urls"] = json!(c.attachment_urls);
    }
    v
}
