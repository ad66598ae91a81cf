//! The client's error model: every call ends in a ticket or in one of these,
//! and each says whether the complaint was accepted, refused, or may have been
//! accepted — the three things an adapter must act on differently.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// One invalid field of a refused complaint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The cluster refused the complaint and will refuse it again (invalid
    /// input, the key already used for other content, ...). Definite: it was
    /// not accepted; do not retry it unchanged.
    #[error("rejected ({code:?}): {message}")]
    Rejected {
        code: Code,
        message: String,
        field_violations: Vec<FieldViolation>,
    },
    /// Every attempt was turned away because the cluster is at capacity, and
    /// the retry budget or the call timeout ran out. Definite: it was not
    /// accepted; try again no sooner than `retry_after`.
    #[error("cluster overloaded, not accepted; retry after {retry_after:?}")]
    Overloaded { retry_after: Duration },
    /// No attempt reached a node (every connection was refused or failed
    /// to open) and the retry budget or the call timeout ran out. Definite:
    /// it was not accepted.
    #[error("no node reachable, not accepted: {last_error}")]
    Unreachable { last_error: String },
    /// The call gave up after an attempt whose outcome is unknown (a timeout,
    /// a dropped connection): the complaint may or may not have been
    /// accepted. Resubmitting with the same `idempotency_key` is safe and
    /// returns the same ticket if it was. The message leaves the key out
    /// (callers log it; keys may carry personal data): match on the field.
    #[error("outcome unknown: {last_error}; resubmit with the same key")]
    Unknown {
        idempotency_key: String,
        last_error: String,
    },
    /// The client was configured wrongly (no endpoints, a bad address).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

/// What an attempt's failure means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Will fail again: stop.
    Definite,
    /// Turned away before anything happened (the server's queue was full):
    /// safe to say "not accepted".
    Overloaded,
    /// Never left this process: the connection could not be opened.
    NotSent,
    /// May have been accepted or not (timeouts, transport errors, a
    /// forwarding node that lost its leader): retry with the same key.
    Ambiguous,
}

pub(crate) fn classify(status: &Status) -> Failure {
    if crate::rotation::never_sent(status) {
        return Failure::NotSent;
    }
    match status.code() {
        Code::ResourceExhausted => Failure::Overloaded,
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Unknown | Code::Cancelled => {
            Failure::Ambiguous
        }
        // INTERNAL can come from a broken HTTP/2 stream as well as from the
        // server's own bug; retrying with the same key is harmless either way.
        Code::Internal => Failure::Ambiguous,
        _ => Failure::Definite,
    }
}

pub(crate) fn rejected(status: &Status) -> ClientError {
    let field_violations = status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: v.field,
                    description: v.description,
                })
                .collect()
        })
        .unwrap_or_default();
    ClientError::Rejected {
        code: status.code(),
        message: status.message().to_string(),
        field_violations,
    }
}

pub(crate) fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
