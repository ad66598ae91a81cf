//! What goes through Raft: the application data of a log entry and its reply.

use serde::{Deserialize, Serialize};

use crate::{
    ClusterMap, ClusterMapV1, Complaint, DispatchCursor, DispatchState, JoinRefusal, MapChange, MapRefusal,
    StatusError, StatusUpdate, TicketId, TicketStatus, UnixMillis,
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
    /// Meta group only: replace the cluster map if this one is newer (the
    /// bootstrap map, in the map's first layout).
    SetClusterMap(ClusterMapV1),
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
    /// Claim idempotency keys at their home shard for complaints that live
    /// on other shards, so that a key is unique in the whole cluster: the
    /// first claim of a key holds it; a later one with the same content (a
    /// retry) is told it holds it too, and any other learns who does.
    /// `accepted_at` stamps the claims' age records (compaction).
    ClaimKeys {
        accepted_at: UnixMillis,
        claims: Vec<KeyClaim>,
    },
    /// The downstream acknowledged `count` tickets between `from` and `to`.
    /// Applied only while the cursor is still at `from`: a deposed leader's
    /// late proposal is then a no-op, and the delivered count stays exact.
    AdvanceDispatch {
        from: DispatchCursor,
        to: DispatchCursor,
        count: u64,
    },
    /// Meta group only: add node `id` at `addr` to the members
    /// ([`ClusterMap::add_member`]), holding no replica yet. Decided at
    /// apply, against the committed map, so two nodes racing for one id or
    /// address cannot both join.
    AddMember { id: u64, addr: String },
    /// Meta group only: one step of a replica move, a drain or a removal
    /// ([`crate::MapChange`]), decided against the committed map.
    ChangeMap(MapChange),
}

/// One key claimed at its home shard for a complaint of another shard.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyClaim {
    pub key: String,
    /// [`crate::Complaint::content_digest`] of the complaint.
    pub digest: u64,
    /// Where the complaint lives: its district, and that district's shard.
    pub district: String,
    pub shard: u32,
}

/// Keys are personal enough (a phone number is a tempting key) to stay out
/// of logs, like the complaint's own `Debug`.
impl std::fmt::Debug for KeyClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyClaim")
            .field("key", &format_args!("<{} bytes withheld>", self.key.len()))
            .field("digest", &self.digest)
            .field("district", &self.district)
            .field("shard", &self.shard)
            .finish()
    }
}

/// The outcome of one claim of a `ClaimKeys` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimOutcome {
    /// The key is this complaint's: claimed now, or by an earlier attempt
    /// with the same content for the same shard.
    Held,
    /// A ticket of the home shard itself has the key.
    Ticket(TicketId),
    /// Another complaint, of `district` on `shard`, has claimed the key.
    Elsewhere { district: String, shard: u32 },
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
    /// The key is claimed by a complaint that lives on `shard` (another
    /// district): rejected; that shard knows its ticket.
    ClaimedElsewhere { shard: u32 },
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
    /// One outcome per claim of a `ClaimKeys`, in order.
    Claimed(Vec<ClaimOutcome>),
    /// Whether the cursor moved, and the state after the command.
    DispatchAdvanced {
        moved: bool,
        state: DispatchState,
    },
    /// The answer to `AddMember`: the map that holds the member (the new
    /// one, or the current one for a retry), or why it may not join.
    Joined(Result<ClusterMap, JoinRefusal>),
    /// The answer to `ChangeMap`: the map after it, or why not.
    MapChanged(Result<ClusterMap, MapRefusal>),
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
            Command::ClaimKeys { claims, .. } => write!(f, "ClaimKeys({} keys)", claims.len()),
            Command::UpdateStatus { updates, .. } => write!(f, "UpdateStatus({} updates)", updates.len()),
            Command::AdvanceDispatch { from, to, count } => {
                write!(f, "AdvanceDispatch({from} -> {to}, {count} tickets)")
            }
            Command::AddMember { id, addr } => write!(f, "AddMember({id} at {addr})"),
            Command::ChangeMap(c) => write!(f, "ChangeMap({c:?})"),
        }
    }
}
