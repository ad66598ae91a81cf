//! The idempotency window: each shard leader periodically proposes
//! `CompactKeys`, so keys older than the retention window are forgotten.
//!
//! The cut-off comes from the leader's clock once, inside the command, and
//! the state machine compares it with each ticket's replicated `accepted_at`,
//! so every replica forgets exactly the same keys at the same log index.
//! Keys are kept for at least the window: a leader whose clock runs slow
//! compacts late, never early by more than its skew.

use std::time::Duration;

use intake_core::{Command, CommandResponse, META_GROUP};
use intake_storage::NodeId;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use crate::convert::now_millis;
use crate::registry::Registry;

/// Runs until `stop` fires.
pub async fn run(
    node: NodeId,
    registry: Registry,
    retention: Duration,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let before = now_millis().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        for (shard, raft) in registry.groups().all() {
            if shard == META_GROUP || raft.metrics().borrow_watched().current_leader != Some(node) {
                continue;
            }
            // Bounded: each entry forgets at most MAX_COMPACT_PER_ENTRY keys,
            // and a few rounds per tick are plenty at any real intake rate.
            for _ in 0..16 {
                match raft.client_write(Command::CompactKeys { before }).await {
                    Ok(r) => match r.data {
                        CommandResponse::Compacted { more: true, .. } => continue,
                        _ => break,
                    },
                    Err(e) => {
                        tracing::debug!(shard, error = %e, "key compaction not proposed");
                        break;
                    }
                }
            }
        }
    }
}
