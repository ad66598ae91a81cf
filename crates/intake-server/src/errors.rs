//! gRPC statuses with rich details (`google.rpc.BadRequest`, `RetryInfo`), so
//! adapters can act on an error without parsing its message.

use std::time::Duration;

use intake_core::FieldViolation;
use intake_proto::pb;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// INVALID_ARGUMENT listing every field violation of a complaint.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    invalid_fields("complaint", violations)
}

/// INVALID_ARGUMENT listing every field violation of `what`.
pub fn invalid_fields(what: &str, violations: &[FieldViolation]) -> Status {
    let list: Vec<tonic_types::FieldViolation> = violations
        .iter()
        .map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone()))
        .collect();
    let summary = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid {what}: {summary}"),
        ErrorDetails::with_bad_request(list),
    )
}

/// A status that tells the client when to retry.
pub fn with_retry(code: Code, message: impl Into<String>, after: Duration) -> Status {
    Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(after)))
}

/// `status` with its retry delay raised to at least `floor`.
pub fn retry_no_sooner(status: Status, floor: Duration) -> Status {
    let after = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay);
    if after.is_some_and(|a| a >= floor) {
        return status;
    }
    with_retry(status.code(), status.message(), floor)
}

/// The same key was already used for a different complaint.
pub fn key_conflict(ticket: &str) -> Status {
    Status::already_exists(format!(
        "idempotency key already used for a different complaint (ticket {ticket}); use a new key for new content"
    ))
}

/// One failed item of a batch, carrying what the unary status would have.
pub fn item_error(status: &Status) -> pb::ItemError {
    let details = status.get_error_details();
    let field_violations = details
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| pb::FieldViolation {
                    field: v.field.clone(),
                    description: v.description.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let retry_after_ms = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    pb::ItemError {
        code: status.code() as i32,
        message: status.message().to_string(),
        field_violations,
        retry_after_ms,
    }
}
