//! `CompactKeys`: the idempotency window. Keys of tickets accepted before
//! the cut-off are forgotten, oldest first and a bounded number per entry,
//! so every replica forgets the same keys at the same log index; tickets
//! stay, only the key index shrinks.

use std::borrow::Cow;

use super::{ShardView, Write, WriteSink};
use crate::UnixMillis;

/// Keys one `CompactKeys` entry forgets at most, so applying it stays short;
/// the leader proposes again while `more` comes back true.
pub const MAX_COMPACT_PER_ENTRY: usize = 20_000;

/// Removes up to [`MAX_COMPACT_PER_ENTRY`] age records of tickets accepted
/// before `before`, oldest first, and each one's key if the key still names
/// that ticket (a key forgotten and used again names a newer one). Returns
/// the keys forgotten and whether older records remain. Reads only
/// replicated state, so it is deterministic.
pub fn compact_keys<V, S>(view: &V, before: UnixMillis, sink: &mut S) -> Result<(u64, bool), V::Error>
where
    V: ShardView,
    S: WriteSink,
    V::Error: From<S::Error>,
{
    let mut forgotten = 0u64;
    for (n, age) in view.ages_before(before).enumerate() {
        if n >= MAX_COMPACT_PER_ENTRY {
            return Ok((forgotten, true));
        }
        let age = age?;
        sink.write(Write::ForgetAge {
            accepted_at: age.accepted_at,
            ticket: age.ticket,
        })?;
        // The position decides: a key names a ticket of this shard.
        let still_names = view
            .key(&age.key)?
            .is_some_and(|id| (id.log_index, id.item) == (age.ticket.log_index, age.ticket.item));
        if still_names {
            sink.write(Write::ForgetKey {
                key: Cow::Borrowed(&age.key),
            })?;
            forgotten += 1;
        } else if view.claim(&age.key)?.is_some_and(|c| c.id == age.ticket) {
            // A claim for a complaint of another shard ([`super::claim_keys`]).
            sink.write(Write::ForgetClaim {
                key: Cow::Borrowed(&age.key),
            })?;
            forgotten += 1;
        }
    }
    Ok((forgotten, false))
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
