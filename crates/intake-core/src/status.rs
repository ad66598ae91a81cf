//! Status reported back by the downstream dispatch system, and the rules a
//! change of status must follow. Pure, so every replica and the proposing
//! leader judge an update the same way: the leader rejects early with a clear
//! error, and apply re-checks because it alone sees the committed order.

use serde::{Deserialize, Serialize};

use crate::{TicketId, TicketStatus, UnixMillis};

/// At most this many status events are kept per ticket; further updates are
/// rejected, so one chatty downstream cannot grow a record without bound.
pub const MAX_STATUS_HISTORY: usize = 32;

/// Longest department name and note accepted, in bytes.
pub const MAX_DEPARTMENT_BYTES: usize = 128;
pub const MAX_NOTE_BYTES: usize = 1024;

/// One status change as the downstream reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub ticket: TicketId,
    pub status: TicketStatus,
    /// Required for `Assigned`, refused otherwise.
    pub department: Option<String>,
    pub note: String,
    /// When the downstream says the change happened (its clock).
    pub reported_at: UnixMillis,
}

/// One entry of a ticket's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub status: TicketStatus,
    pub department: Option<String>,
    pub note: String,
    pub reported_at: UnixMillis,
    /// When the proposing leader accepted the update; stamped once so all
    /// replicas store the same value.
    pub recorded_at: UnixMillis,
}

/// Why a status update is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StatusError {
    #[error("ticket is {from:?}, which is final; it cannot become {to:?}")]
    Final { from: TicketStatus, to: TicketStatus },
    #[error("ticket is {from:?}; it cannot go back to {to:?}")]
    Backwards { from: TicketStatus, to: TicketStatus },
    #[error("status Assigned needs a department")]
    MissingDepartment,
    #[error("only status Assigned takes a department")]
    UnexpectedDepartment,
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: String, max: usize },
    #[error("ticket already has {MAX_STATUS_HISTORY} status events; no more are accepted")]
    HistoryFull,
}

/// Order of progress; resolved and rejected are both final.
fn rank(s: TicketStatus) -> u8 {
    match s {
        TicketStatus::Received => 0,
        TicketStatus::Dispatched => 1,
        TicketStatus::Assigned => 2,
        TicketStatus::Resolved | TicketStatus::Rejected => 3,
    }
}

fn is_final(s: TicketStatus) -> bool {
    rank(s) == 3
}

/// Checks an update's own fields, independent of the ticket's state.
pub fn validate_update(u: &StatusUpdate) -> Result<(), StatusError> {
    match (&u.department, u.status) {
        (None, TicketStatus::Assigned) => return Err(StatusError::MissingDepartment),
        (Some(_), s) if s != TicketStatus::Assigned => return Err(StatusError::UnexpectedDepartment),
        _ => {}
    }
    if u.department
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DEPARTMENT_BYTES)
    {
        return Err(StatusError::TooLong {
            field: "department".into(),
            max: MAX_DEPARTMENT_BYTES,
        });
    }
    if u.note.len() > MAX_NOTE_BYTES {
        return Err(StatusError::TooLong {
            field: "note".into(),
            max: MAX_NOTE_BYTES,
        });
    }
    Ok(())
}

/// Checks that a ticket whose status is `from`, with `history_len` events
/// so far, may take `u`. Status only moves forward; re-reporting the current
/// status is allowed (a redelivered report, or a reassignment to another
/// department), except once final.
pub fn check_transition(from: TicketStatus, history_len: usize, u: &StatusUpdate) -> Result<(), StatusError> {
    validate_update(u)?;
    if history_len >= MAX_STATUS_HISTORY {
        return Err(StatusError::HistoryFull);
    }
    if is_final(from) {
        return Err(StatusError::Final { from, to: u.status });
    }
    if rank(u.status) < rank(from) {
        return Err(StatusError::Backwards { from, to: u.status });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(status: TicketStatus, department: Option<&str>) -> StatusUpdate {
        StatusUpdate {
            ticket: TicketId::new(1, 10, 0),
            status,
            department: department.map(str::to_owned),
            note: String::new(),
            reported_at: 0,
        }
    }

    #[test]
    fn forward_moves_are_allowed() {
        use TicketStatus::*;
        assert_eq!(check_transition(Received, 0, &upd(Dispatched, None)), Ok(()));
        assert_eq!(
            check_transition(Dispatched, 1, &upd(Assigned, Some("roads"))),
            Ok(())
        );
        assert_eq!(
            check_transition(Assigned, 2, &upd(Assigned, Some("water"))),
            Ok(())
        );
        assert_eq!(check_transition(Assigned, 3, &upd(Resolved, None)), Ok(()));
        assert_eq!(check_transition(Received, 0, &upd(Rejected, None)), Ok(()));
    }

    #[test]
    fn backwards_final_and_malformed_are_refused() {
        use TicketStatus::*;
        assert_eq!(
            check_transition(Resolved, 3, &upd(Received, None)),
            Err(StatusError::Final {
                from: Resolved,
                to: Received
            })
        );
        assert_eq!(
            check_transition(Assigned, 2, &upd(Dispatched, None)),
            Err(StatusError::Backwards {
                from: Assigned,
                to: Dispatched
            })
        );
        assert_eq!(
            check_transition(Received, 0, &upd(Assigned, None)),
            Err(StatusError::MissingDepartment)
        );
        assert_eq!(
            check_transition(Received, 0, &upd(Dispatched, Some("x"))),
            Err(StatusError::UnexpectedDepartment)
        );
        assert_eq!(
            check_transition(Received, MAX_STATUS_HISTORY, &upd(Dispatched, None)),
            Err(StatusError::HistoryFull)
        );
        let mut long = upd(Dispatched, None);
        long.note = "x".repeat(MAX_NOTE_BYTES + 1);
        assert!(matches!(
            check_transition(Received, 0, &long),
            Err(StatusError::TooLong { .. })
        ));
    }
}
