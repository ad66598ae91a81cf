//! Delivery bookkeeping that travels through Raft: where each shard's
//! delivery to the downstream stands, so a new leader resumes exactly there.

use serde::{Deserialize, Serialize};

use crate::TicketId;

/// The position of the next ticket to deliver, in commit order: tickets are
/// ordered by (log index, item), as their storage keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct DispatchCursor {
    pub log_index: u64,
    /// Up to 256: one past the last item of an entry.
    pub item: u16,
}

impl DispatchCursor {
    /// The position just after `id`.
    pub fn after(id: &TicketId) -> Self {
        Self {
            log_index: id.log_index,
            item: u16::from(id.item) + 1,
        }
    }

    /// The position of `id` itself.
    pub fn at(id: &TicketId) -> Self {
        Self {
            log_index: id.log_index,
            item: u16::from(id.item),
        }
    }
}

impl std::fmt::Display for DispatchCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.log_index, self.item)
    }
}

/// A shard's replicated delivery state. `created - delivered` is the lag in
/// tickets, known on every replica without scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DispatchState {
    /// Every ticket before this position has been acknowledged downstream.
    pub next: DispatchCursor,
    /// Tickets acknowledged downstream so far.
    pub delivered: u64,
    /// Tickets created so far.
    pub created: u64,
}

impl DispatchState {
    pub fn lag(&self) -> u64 {
        self.created.saturating_sub(self.delivered)
    }
}
