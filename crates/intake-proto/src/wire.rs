//! The request metadata and answer shapes that server, client and load
//! engine share, written once so that the three cannot drift apart.

use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::pb;

/// gRPC's header for a retried call (gRFC A6): how many attempts came
/// before this one. Clients that send it let a node answer complaints that
/// already committed without another proposal.
pub const PREVIOUS_ATTEMPTS_HEADER: &str = "grpc-previous-rpc-attempts";

/// The HTTP door's form of [`PREVIOUS_ATTEMPTS_HEADER`] (an HTTP client
/// sends no `grpc-` headers): `X-Previous-Attempts: N` on a retry, which the
/// door passes on as gRPC's.
pub const HTTP_PREVIOUS_ATTEMPTS_HEADER: &str = "x-previous-attempts";

/// The HTTP door's form of `grpc-timeout`: how long the caller waits, in
/// milliseconds, counted from the request's arrival.
pub const HTTP_TIMEOUT_MS_HEADER: &str = "x-request-timeout-ms";

/// Metadata key counting the nodes a request was forwarded through, so a
/// stale view of leaders can never bounce a request around the cluster.
pub const HOPS_HEADER: &str = "x-intake-hops";

/// Marks a retried call (no mark on a first attempt).
pub fn mark_retry(metadata: &mut MetadataMap, previous_attempts: u32) {
    if previous_attempts > 0 {
        metadata.insert(PREVIOUS_ATTEMPTS_HEADER, MetadataValue::from(previous_attempts));
    }
}

/// Whether the caller says this call retries an earlier attempt.
pub fn is_retry(metadata: &MetadataMap) -> bool {
    metadata
        .get(PREVIOUS_ATTEMPTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|n| n > 0)
}

/// How many nodes a request has passed through before this one.
pub fn hops_of(metadata: &MetadataMap) -> u32 {
    metadata
        .get(HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sets the hop count of a forwarded request.
pub fn set_hops(metadata: &mut MetadataMap, hops: u32) {
    metadata.insert(HOPS_HEADER, MetadataValue::from(hops));
}

/// The retry delay an answer asks for, if any.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    status.get_details_retry_info().and_then(|r| r.retry_delay)
}

/// One item of a batch answer: its ticket, or its error. An item with
/// neither (no node sends one) is an `INTERNAL` error.
pub fn item_outcome(r: pb::SubmitResult) -> Result<pb::SubmitResponse, pb::ItemError> {
    match r.outcome {
        Some(pb::submit_result::Outcome::Accepted(ok)) => Ok(ok),
        Some(pb::submit_result::Outcome::Error(e)) => Err(e),
        None => Err(pb::ItemError {
            code: Code::Internal as i32,
            message: "the node answered an empty item".into(),
            field_violations: Vec::new(),
            retry_after_ms: 0,
        }),
    }
}

/// One item of a batch answer, its error rebuilt as the status the unary
/// call would have returned, so that both paths are classified alike.
pub fn item_result(r: pb::SubmitResult) -> Result<pb::SubmitResponse, Status> {
    item_outcome(r).map_err(item_status)
}

/// The retry delay an item error asks for, if any (0 ms means none).
pub fn item_retry_delay(e: &pb::ItemError) -> Option<Duration> {
    (e.retry_after_ms > 0).then(|| Duration::from_millis(e.retry_after_ms))
}

/// The status an item error stands for.
pub fn item_status(e: pb::ItemError) -> Status {
    let after = item_retry_delay(&e);
    let mut details = ErrorDetails::new();
    if !e.field_violations.is_empty() {
        details.set_bad_request(
            e.field_violations
                .into_iter()
                .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                .collect::<Vec<_>>(),
        );
    }
    if let Some(after) = after {
        details.set_retry_info(Some(after));
    }
    Status::with_error_details(Code::from(e.code), e.message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_marks_and_hops_read_back_and_garbage_reads_as_none() {
        let mut m = MetadataMap::new();
        assert!(!is_retry(&m));
        assert_eq!(hops_of(&m), 0);
        mark_retry(&mut m, 0);
        assert!(!is_retry(&m), "a first attempt is not marked");
        mark_retry(&mut m, 2);
        set_hops(&mut m, 1);
        assert!(is_retry(&m));
        assert_eq!(hops_of(&m), 1);
        m.insert(HOPS_HEADER, MetadataValue::from_static("lots"));
        assert_eq!(hops_of(&m), 0);
    }

    #[test]
    fn an_item_error_becomes_the_unary_status() {
        let s = item_status(pb::ItemError {
            code: Code::InvalidArgument as i32,
            message: "invalid complaint: text: is required".into(),
            field_violations: vec![pb::FieldViolation {
                field: "text".into(),
                description: "is required".into(),
            }],
            retry_after_ms: 0,
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.get_details_bad_request().map(|b| b.field_violations.len()),
            Some(1)
        );
        let s = item_status(pb::ItemError {
            code: Code::ResourceExhausted as i32,
            message: "at capacity".into(),
            field_violations: vec![],
            retry_after_ms: 250,
        });
        assert_eq!(retry_delay(&s), Some(Duration::from_millis(250)));
    }

    #[test]
    fn an_item_reads_as_its_ticket_or_its_error_and_an_empty_one_as_internal() {
        let ok = pb::SubmitResponse {
            ticket_id: "0-1".into(),
            ..Default::default()
        };
        let accepted = pb::SubmitResult {
            outcome: Some(pb::submit_result::Outcome::Accepted(ok.clone())),
        };
        assert_eq!(item_outcome(accepted.clone()), Ok(ok));
        assert!(item_result(accepted).is_ok());
        let refused = pb::ItemError {
            code: Code::ResourceExhausted as i32,
            message: "at capacity".into(),
            field_violations: vec![],
            retry_after_ms: 40,
        };
        assert_eq!(item_retry_delay(&refused), Some(Duration::from_millis(40)));
        let err = item_outcome(pb::SubmitResult {
            outcome: Some(pb::submit_result::Outcome::Error(refused.clone())),
        });
        assert_eq!(err, Err(refused));
        let empty = item_outcome(pb::SubmitResult { outcome: None });
        assert!(matches!(&empty, Err(e) if e.code == Code::Internal as i32 && item_retry_delay(e).is_none()));
        let status = item_result(pb::SubmitResult { outcome: None }).err();
        assert_eq!(status.map(|s| s.code()), Some(Code::Internal));
    }
}
