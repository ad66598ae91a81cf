//! What goes through Raft: the application data of a log entry and its reply.

use serde::{Deserialize, Serialize};

use crate::{
    ClusterMap, Complaint, DispatchCursor, DispatchState, StatusError, StatusUpdate, TicketId, TicketStatus,
    UnixMillis,
};

/// The application payload of one Raft entry. One entry may carry several
/// complaints, so concurrent submissions share one replication round and one
/// fsync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create tickets. `accepted_at` is stamped once by the proposing leader so
    /// that every replica stores the same value.
    Submit {
        accepted_at: UnixMillis,
        complaints: Vec<Complaint>,
    },
    /// Meta group only: replace the cluster map if this one is newer.
    SetClusterMap(ClusterMap),
    /// Forget idempotency keys of tickets accepted before `before` (the
    /// leader's clock, minus the retention window). Tickets stay; only the
    /// key index shrinks. Applied identically everywhere, so every replica
    /// forgets the same keys at the same log index.
    CompactKeys { before: UnixMillis },
    /// Record status changes reported by the downstream. `recorded_at` is
    /// the proposing leader's clock, stamped once for every replica. Each
    /// update is checked against the ticket's committed status at apply
    /// time, since only the log orders concurrent reports.
    UpdateStatus {
        recorded_at: UnixMillis,
        updates: Vec<StatusUpdate>,
    },
    /// The downstream acknowledged `count` tickets between `from` and `to`.
    /// Applied only while the cursor is still at `from`: a deposed leader's
    /// late proposal is then a no-op, and the delivered count stays exact.
    AdvanceDispatch {
        from: DispatchCursor,
        to: DispatchCursor,
        count: u64,
    },
}

/// The outcome of one update of an `UpdateStatus` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusOutcome {
    /// Recorded; the ticket now has this status and this many events.
    Recorded {
        status: TicketStatus,
        events: usize,
    },
    NotFound,
    Refused(StatusError),
}

/// The outcome of one complaint of a `Submit` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubmitOutcome {
    /// A new ticket was created.
    Created { id: TicketId, accepted_at: UnixMillis },
    /// The key was seen before with the same content: the original ticket.
    Existing { id: TicketId, accepted_at: UnixMillis },
    /// The key was seen before with different content: rejected.
    Conflict { id: TicketId },
}

/// What applying a command returns to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    /// Entries without application data (blank, membership) reply with this.
    #[default]
    Empty,
    Submitted(Vec<SubmitOutcome>),
    /// Keys forgotten by a `CompactKeys`, and whether older ones remain
    /// (each entry does a bounded amount of work).
    Compacted {
        keys: u64,
        more: bool,
    },
    StatusUpdated(Vec<StatusOutcome>),
    /// Whether the cursor moved, and the state after the command.
    DispatchAdvanced {
        moved: bool,
        state: DispatchState,
    },
}

/// Openraft logs entries with `Display`; complaint text stays out of logs.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Submit {
                accepted_at,
                complaints,
            } => {
                write!(
                    f,
                    "Submit({} complaints, accepted_at={accepted_at})",
                    complaints.len()
                )
            }
            Command::SetClusterMap(m) => write!(f, "SetClusterMap(version={})", m.version),
            Command::CompactKeys { before } => write!(f, "CompactKeys(before={before})"),
            Command::UpdateStatus { updates, .. } => write!(f, "UpdateStatus({} updates)", updates.len()),
            Command::AdvanceDispatch { from, to, count } => {
                write!(f, "AdvanceDispatch({from} -> {to}, {count} tickets)")
            }
        }
    }
}
