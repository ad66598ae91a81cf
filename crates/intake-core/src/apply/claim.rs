//! `ClaimKeys`: idempotency keys unique in the whole cluster. A key's home
//! shard ([`crate::ClusterMap::home_of_key`]) orders every use of it. A
//! complaint that lives on its key's home shard needs nothing more: its
//! `Submit` there checks the key (and any claim on it). A complaint that
//! lives elsewhere first claims its key at home; only the first content to
//! claim a key holds it, so a second district (hence maybe a second shard)
//! can never mint a second ticket for one key.
//!
//! A claim keeps the complaint's content digest, not the complaint: enough
//! to tell a retry (same content, same shard: still held) from new content.
//! It gets an id of its own, (home shard, log index, position), for its age
//! record, so the idempotency window forgets claims like keys.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{ShardView, Write, WriteSink};
use crate::{ClaimOutcome, KeyClaim, TicketId, UnixMillis};

/// A claim as the home shard stores it, under its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredClaim {
    pub digest: u64,
    pub district: String,
    pub shard: u32,
    /// The claim's position in the home shard's log: its age record's id.
    pub id: TicketId,
    pub accepted_at: UnixMillis,
}

/// Applies one `ClaimKeys` entry at `log_index`, returning one outcome per
/// claim in order. Claims past the 256th are ignored (positions are 8
/// bits; the proposer never packs more), so the answer is shorter.
pub fn claim_keys<V, S>(
    view: &V,
    log_index: u64,
    accepted_at: UnixMillis,
    claims: Vec<KeyClaim>,
    sink: &mut S,
) -> Result<Vec<ClaimOutcome>, V::Error>
where
    V: ShardView,
    S: WriteSink,
    V::Error: From<S::Error>,
{
    // Claims made by this entry, which the view does not show yet.
    let mut made: HashMap<String, StoredClaim> = HashMap::new();
    let mut outcomes = Vec::with_capacity(claims.len());
    for (i, claim) in claims.into_iter().enumerate() {
        let Ok(item) = u8::try_from(i) else { break };
        if let Some(id) = view.key(&claim.key)? {
            outcomes.push(ClaimOutcome::Ticket(id));
            continue;
        }
        let held = match made.get(&claim.key) {
            Some(h) => Some(h.clone()),
            None => view.claim(&claim.key)?,
        };
        if let Some(h) = held {
            outcomes.push(if h.digest == claim.digest && h.shard == claim.shard {
                ClaimOutcome::Held
            } else {
                ClaimOutcome::Elsewhere {
                    district: h.district,
                    shard: h.shard,
                }
            });
            continue;
        }
        let stored = StoredClaim {
            digest: claim.digest,
            district: claim.district,
            shard: claim.shard,
            id: TicketId::new(view.shard(), log_index, item),
            accepted_at,
        };
        sink.write(Write::Claim {
            key: Cow::Borrowed(&claim.key),
            claim: Cow::Borrowed(&stored),
        })?;
        sink.write(Write::Age {
            accepted_at,
            ticket: stored.id,
            key: Cow::Borrowed(&claim.key),
        })?;
        made.insert(claim.key, stored);
        outcomes.push(ClaimOutcome::Held);
    }
    Ok(outcomes)
}

#[cfg(test)]
#[path = "claim_tests.rs"]
mod tests;
