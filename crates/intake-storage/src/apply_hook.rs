//! A node-level observer of what apply creates, for in-memory views that
//! need no replication of their own (surge rates): every replica applies
//! every committed entry, so every replica's observer sees the same tickets,
//! and a new leader already holds the counts when it takes office.

use intake_core::Ticket;

/// Called by `apply` once per ticket it creates (not for repeats of a known
/// key), on every replica. Must be quick and must not block: apply holds
/// the shard's apply lock. Not called again for entries a restarted node
/// does not re-apply, so what it builds is a view, never a record.
pub trait ApplyHook: Send + Sync {
    fn created(&self, ticket: &Ticket);
}
