//! RFC 9457 problem details: every error of the JSON API, in one shape.
//!
//! Errors from the node arrive as `tonic::Status` (the HTTP door calls the
//! same `IntakeService` as gRPC), so the mapping from gRPC code to HTTP status
//! lives here, once, and carries the same `google.rpc` details: field
//! violations become `violations`, a `RetryInfo` becomes `Retry-After`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Retry delay given with a 503 that carries none of its own.
const DEFAULT_UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);

/// One field the request got wrong, as gRPC's `BadRequest.FieldViolation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

/// An RFC 9457 problem document, with Intake's extension members.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The gRPC code the node answered with, e.g. `INVALID_ARGUMENT`.
    pub code: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// Milliseconds to wait before retrying with the same idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl Problem {
    /// A problem of `status` with no gRPC origin (bad JSON, unknown path).
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: type_uri(status),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            code: code_name(code_of_http(status)),
            violations: Vec::new(),
            retry_after_ms: None,
        }
    }

    /// 400 naming the fields at fault.
    pub fn invalid(detail: impl Into<String>, violations: Vec<Violation>) -> Self {
        Self {
            violations,
            ..Self::new(StatusCode::BAD_REQUEST, detail)
        }
    }

    /// A 400 with a single field at fault.
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let v = Violation {
            field: field.into(),
            description: description.into(),
        };
        Self::invalid(
            format!("invalid request: {}: {}", v.field, v.description),
            vec![v],
        )
    }

    /// The HTTP form of a node's answer.
    pub fn from_status(s: &Status) -> Self {
        let http = http_status(s.code());
        let details = s.get_error_details();
        let violations = details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| Violation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut retry = details.retry_info().and_then(|r| r.retry_delay);
        if retry.is_none() && s.code() == Code::Unavailable {
            retry = Some(DEFAULT_UNAVAILABLE_RETRY);
        }
        Self {
            kind: type_uri(http),
            title: http.canonical_reason().unwrap_or("Error"),
            status: http.as_u16(),
            detail: s.message().to_string(),
            code: code_name(s.code()),
            violations,
            retry_after_ms: retry.map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
        }
    }

    pub fn http_status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let retry = self.retry_after_secs();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §15.5.2: a 401 names the scheme it wants (RFC 6750).
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"intake\""),
            );
        }
        resp
    }
}

/// The HTTP status for a gRPC code. Codes a client's input can cause map to
/// 4xx; only the node's own faults (INTERNAL, DATA_LOSS, UNKNOWN) are 5xx
/// but for the retryable 503 and 504.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal | Code::Unknown | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC code a problem made here (not by the node) stands for.
fn code_of_http(s: StatusCode) -> Code {
    match s {
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
        StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
        s if s.is_client_error() => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

/// The canonical upper-case name of a gRPC code (`INVALID_ARGUMENT`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A stable `type` URI per HTTP status, documented in openapi.json.
fn type_uri(s: StatusCode) -> &'static str {
    match s.as_u16() {
        400 => "/v1/problems/invalid-request",
        401 => "/v1/problems/unauthenticated",
        403 => "/v1/problems/forbidden",
        404 => "/v1/problems/not-found",
        405 => "/v1/problems/method-not-allowed",
        409 => "/v1/problems/conflict",
        413 => "/v1/problems/too-large",
        415 => "/v1/problems/unsupported-media-type",
        429 => "/v1/problems/overloaded",
        503 => "/v1/problems/unavailable",
        504 => "/v1/problems/deadline-exceeded",
        _ => "about:blank",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn field_violations_and_retry_info_survive_the_mapping() {
        let s = Status::with_error_details(
            Code::InvalidArgument,
            "invalid complaint: text: is required",
            ErrorDetails::with_bad_request_violation("text", "is required"),
        );
        let p = Problem::from_status(&s);
        assert_eq!(p.status, 400);
        assert_eq!(p.code, "INVALID_ARGUMENT");
        assert_eq!(p.violations[0].field, "text");

        let s = Status::with_error_details(
            Code::ResourceExhausted,
            "busy",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        let p = Problem::from_status(&s);
        assert_eq!(p.status, 429);
        assert_eq!(p.retry_after_secs(), Some(2));

        let p = Problem::from_status(&Status::unavailable("no leader"));
        assert_eq!(p.status, 503);
        assert_eq!(p.retry_after_secs(), Some(1));
    }

    #[test]
    fn every_code_a_client_can_cause_is_not_a_500() {
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::Unavailable,
        ] {
            assert!(http_status(code).as_u16() < 500 || http_status(code) == StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
