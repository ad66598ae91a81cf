//! The request path's typed error (TiKV's `raftstore::Error` is the model),
//! and its one conversion to the wire.
//!
//! Inside the node, control flow matches these variants: whether to forward,
//! ask another voter, wait for an election, or give up. Statuses exist only
//! at the edges: [`RequestError::to_status`] and [`RequestError::to_item`]
//! build what a client sees, and [`RequestError::from_peer`] reads what
//! another node answered, once, where the answer arrives.

use std::time::Duration;

use intake_core::FieldViolation;
use intake_proto::pb;
use intake_storage::{NodeId, ShardId};
use tokio::time::Instant;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::admission::delay::retry_after;
use crate::admission::{Reason, Refusal};

/// After a node said it does not lead: the leader is usually known by then.
const NOT_LEADER_RETRY: Duration = Duration::from_millis(50);
/// An election, or no replica reachable: a few heartbeats.
const NO_LEADER_RETRY: Duration = Duration::from_millis(500);
/// A replica that stopped (shutdown or a failed disk): another node answers.
const STOPPED_RETRY: Duration = Duration::from_secs(1);

/// Whether an expired request may still take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The deadline passed while it was queued: it was never proposed.
    NotStored,
    /// The deadline passed after it was proposed or forwarded: it may still
    /// commit, so a retry must use the same idempotency key.
    MayHaveCommitted,
    /// A status update that may have been recorded.
    UpdateMayHaveCommitted,
    /// A read: nothing was written.
    Read,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    #[error("invalid {what}: {}", summary(.violations))]
    Invalid {
        what: &'static str,
        violations: Vec<FieldViolation>,
    },
    #[error("{0}")]
    Refused(Refusal),
    #[error("node {node} does not lead shard {shard}")]
    NotLeader { node: NodeId, shard: ShardId },
    #[error("shard {shard} has no reachable leader right now")]
    NoLeader { shard: ShardId },
    #[error("node {node} has no replica of shard {shard}")]
    NoReplica { node: NodeId, shard: ShardId },
    /// No node of the shard could be reached, or the one asked said it
    /// cannot serve: another node (or a later try) may.
    #[error("{0}")]
    Unreachable(String),
    #[error("{}", expiry_message(*.0))]
    Expired(Expiry),
    #[error(
        "idempotency key already used for a different complaint (ticket {ticket}); use a new key for new content"
    )]
    Conflict { ticket: String },
    /// The key's home shard says a complaint of another shard holds it, and
    /// that shard's ticket for it is not known here (yet): the original
    /// may still be on its way.
    #[error(
        "idempotency key already used for another complaint ({}shard {shard}; its ticket is not known here yet); use a new key for new content",
        .district.as_deref().map(|d| format!("district {d}, ")).unwrap_or_default()
    )]
    KeyTaken {
        district: Option<String>,
        shard: ShardId,
    },
    #[error("shard {shard} replica stopped: {why}")]
    Stopped { shard: ShardId, why: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another node's answer, passed on as it came.
    #[error("{message}")]
    Peer {
        code: Code,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Internal(String),
}

fn summary(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

fn expiry_message(e: Expiry) -> &'static str {
    match e {
        Expiry::NotStored => {
            "the deadline passed while queued; it was not stored: retry with the same idempotency key"
        }
        Expiry::MayHaveCommitted => {
            "not acknowledged before the deadline; it may have committed: retry with the same idempotency key"
        }
        Expiry::UpdateMayHaveCommitted => {
            "status update not committed before the deadline; it may have been: retry"
        }
        Expiry::Read => "not answered before the deadline",
    }
}

impl From<Refusal> for RequestError {
    fn from(r: Refusal) -> Self {
        RequestError::Refused(r)
    }
}

impl RequestError {
    /// A complaint with these field violations.
    pub fn invalid_complaint(violations: Vec<FieldViolation>) -> Self {
        RequestError::Invalid {
            what: "complaint",
            violations,
        }
    }

    /// One violation of `field`.
    pub fn invalid_field(what: &'static str, field: &str, description: impl Into<String>) -> Self {
        RequestError::Invalid {
            what,
            violations: vec![FieldViolation {
                field: field.into(),
                description: description.into(),
            }],
        }
    }

    pub fn code(&self) -> Code {
        match self {
            RequestError::Invalid { .. } => Code::InvalidArgument,
            RequestError::Refused(_) => Code::ResourceExhausted,
            RequestError::NotLeader { .. }
            | RequestError::NoLeader { .. }
            | RequestError::NoReplica { .. }
            | RequestError::Unreachable(_)
            | RequestError::Stopped { .. } => Code::Unavailable,
            RequestError::Expired(_) => Code::DeadlineExceeded,
            RequestError::Conflict { .. } | RequestError::KeyTaken { .. } => Code::AlreadyExists,
            RequestError::NotFound(_) => Code::NotFound,
            RequestError::FailedPrecondition(_) => Code::FailedPrecondition,
            RequestError::Peer { code, .. } => *code,
            RequestError::Internal(_) => Code::Internal,
        }
    }

    /// When a retry may succeed, if the client should wait before it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RequestError::Refused(r) => Some(r.retry_after),
            RequestError::NotLeader { .. } | RequestError::NoReplica { .. } => {
                Some(retry_after(NOT_LEADER_RETRY))
            }
            RequestError::NoLeader { .. } | RequestError::Unreachable(_) => {
                Some(retry_after(NO_LEADER_RETRY))
            }
            RequestError::Stopped { .. } => Some(retry_after(STOPPED_RETRY)),
            RequestError::Peer { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn violations(&self) -> &[FieldViolation] {
        match self {
            RequestError::Invalid { violations, .. } => violations,
            _ => &[],
        }
    }

    /// The status a client sees: the one conversion to gRPC.
    pub fn to_status(&self) -> Status {
        let mut details = ErrorDetails::new();
        if !self.violations().is_empty() {
            details.set_bad_request(
                self.violations()
                    .iter()
                    .map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone()))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(after) = self.retry_after() {
            details.set_retry_info(Some(after));
        }
        Status::with_error_details(self.code(), self.to_string(), details)
    }

    /// One failed item of a batch, carrying what the unary status would.
    pub fn to_item(&self) -> pb::ItemError {
        pb::ItemError {
            code: self.code() as i32,
            message: self.to_string(),
            field_violations: self
                .violations()
                .iter()
                .map(|v| pb::FieldViolation {
                    field: v.field.clone(),
                    description: v.description.clone(),
                })
                .collect(),
            retry_after_ms: self.retry_after().map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// What another node answered to a forwarded request. Its refusals stay
    /// refusals (the door stretches them, and notes the leader's shedding);
    /// "cannot serve" makes the router try elsewhere; a timeout of the call
    /// itself (tonic's CANCELLED) is an expiry that may have committed.
    pub fn from_peer(status: &Status, deadline: Instant, expiry: Expiry) -> Self {
        let after = intake_proto::wire::retry_delay(status);
        Self::from_peer_parts(status.code(), status.message(), after, deadline, expiry)
    }

    /// As [`RequestError::from_peer`], for one item of a batch answer.
    pub fn from_peer_item(e: pb::ItemError, deadline: Instant) -> Self {
        let after = intake_proto::wire::item_retry_delay(&e);
        Self::from_peer_parts(
            Code::from(e.code),
            &e.message,
            after,
            deadline,
            Expiry::MayHaveCommitted,
        )
    }

    fn from_peer_parts(
        code: Code,
        message: &str,
        after: Option<Duration>,
        deadline: Instant,
        expiry: Expiry,
    ) -> Self {
        let timed_out = code == Code::Cancelled
            && (message == tonic::TimeoutExpired(()).to_string() || Instant::now() >= deadline);
        match code {
            _ if timed_out => RequestError::Expired(expiry),
            Code::ResourceExhausted => RequestError::Refused(Refusal {
                reason: Reason::Peer(message.to_string()),
                retry_after: retry_after(after.unwrap_or_default()),
            }),
            Code::Unavailable => RequestError::Unreachable(message.to_string()),
            code => RequestError::Peer {
                code,
                message: message.to_string(),
                retry_after: after,
            },
        }
    }

    /// Whether the deadline passed (here or at the node asked).
    pub fn is_expiry(&self) -> bool {
        match self {
            RequestError::Expired(_) => true,
            RequestError::Peer { code, .. } => *code == Code::DeadlineExceeded,
            _ => false,
        }
    }

    /// The retry delay of a refusal (for the door's note of a leader's
    /// shedding).
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            RequestError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_one_code_and_the_wire_forms_agree() {
        let cases = [
            (
                RequestError::invalid_field("complaint", "text", "is required"),
                Code::InvalidArgument,
            ),
            (
                RequestError::Refused(Refusal::new(Reason::OutOfCpu, Duration::from_millis(300))),
                Code::ResourceExhausted,
            ),
            (RequestError::NotLeader { node: 1, shard: 2 }, Code::Unavailable),
            (
                RequestError::Expired(Expiry::MayHaveCommitted),
                Code::DeadlineExceeded,
            ),
            (
                RequestError::Conflict { ticket: "0-1".into() },
                Code::AlreadyExists,
            ),
        ];
        for (e, code) in cases {
            let status = e.to_status();
            let item = e.to_item();
            assert_eq!(status.code(), code, "{e:?}");
            assert_eq!(item.code, code as i32);
            assert_eq!(item.message, status.message());
            let after = status.get_details_retry_info().and_then(|r| r.retry_delay);
            assert_eq!(after.map_or(0, |d| d.as_millis() as u64), item.retry_after_ms);
            let bad = status
                .get_details_bad_request()
                .map_or(0, |b| b.field_violations.len());
            assert_eq!(bad, item.field_violations.len());
        }
    }

    #[test]
    fn a_peers_answer_is_read_once_into_what_the_router_acts_on() {
        let later = Instant::now() + Duration::from_secs(5);
        let shed = Refusal::new(Reason::ShardAtCapacity(3), Duration::from_millis(700));
        let back = RequestError::from_peer(
            &RequestError::Refused(shed).to_status(),
            later,
            Expiry::MayHaveCommitted,
        );
        let r = back.refusal().expect("a refusal stays a refusal");
        assert_eq!(r.retry_after, Duration::from_millis(700));
        assert_eq!(
            back.to_string(),
            "shard 3 is at capacity; retry with the same idempotency key"
        );
        let gone = RequestError::NotLeader { node: 2, shard: 3 }.to_status();
        assert!(matches!(
            RequestError::from_peer(&gone, later, Expiry::MayHaveCommitted),
            RequestError::Unreachable(_)
        ));
        let timeout = Status::cancelled(tonic::TimeoutExpired(()).to_string());
        assert!(matches!(
            RequestError::from_peer(&timeout, later, Expiry::MayHaveCommitted),
            RequestError::Expired(Expiry::MayHaveCommitted)
        ));
        let conflict = RequestError::Conflict { ticket: "0-1".into() }.to_status();
        let passed = RequestError::from_peer(&conflict, later, Expiry::MayHaveCommitted);
        assert_eq!(passed.code(), Code::AlreadyExists);
        assert_eq!(passed.to_string(), conflict.message());
    }
}
