//! How long each shard's submissions take from this node's door, and which
//! leader that was measured against.
//!
//! While a shard's estimate stays above twice the latency target, the door
//! refuses its ordinary complaints: whatever the bottleneck (the leader's
//! queue, forwarding, CPU), admitting more only makes all of them late. The
//! estimate must describe the shard as it is now, though. After a leader
//! died, the first answers came from requests that had waited out the
//! election, and the estimate read seconds for a shard whose new leader
//! answered in milliseconds: ordinary complaints were refused for 2-4 s
//! after the fault had ended. So the router measures only from the attempt
//! that got the answer (not the leaderless wait before it), and an estimate
//! made under another leader is dropped once a new one is known.
//!
//! The same holds for one attempt: a forward to a leader that stalled (a
//! paused container, a node cut off) runs out at its deadline, often
//! seconds after the election that replaced that leader. Recorded under
//! the leader known when it ran out, it read as the new leader's latency,
//! and the shards the stalled node had led refused ordinary complaints
//! while they were served in milliseconds (most of what the pause and
//! partition faults missed of their 99 % target). So an attempt that began
//! under another leader than the one known at its end is not counted.

use std::time::Duration;

use dashmap::DashMap;
use intake_storage::{NodeId, ShardId};
use tokio::time::Instant;

use super::latency::FadingLatency;

#[derive(Debug, Default)]
pub struct ShardSlowness {
    shards: DashMap<ShardId, Measured>,
}

#[derive(Debug, Default)]
struct Measured {
    /// The leader the samples were answered under, when this node knows it
    /// (it has a replica of the shard).
    leader: Option<NodeId>,
    latency: FadingLatency,
}

impl ShardSlowness {
    /// A submission for `shard` took `took`: its attempt began under
    /// `asked` and ended under `leader`, as far as this node knows them.
    pub fn record(
        &self,
        shard: ShardId,
        asked: Option<NodeId>,
        leader: Option<NodeId>,
        took: Duration,
        now: Instant,
    ) {
        if asked.is_some() && asked != leader {
            return;
        }
        let mut m = self.shards.entry(shard).or_default();
        if leader.is_some() && m.leader != leader {
            m.latency.reset();
            m.leader = leader;
        }
        m.latency.record_at(took, now);
    }

    /// The estimate for `shard` if above `limit`. `leader` gives the shard's
    /// leader as this node knows it now (asked only when the estimate is
    /// high, to keep the common path cheap): an estimate measured under
    /// another one says nothing about it and is dropped.
    pub fn above(
        &self,
        shard: ShardId,
        leader: impl FnOnce() -> Option<NodeId>,
        limit: Duration,
        now: Instant,
    ) -> Option<Duration> {
        let (slow, measured_under) = {
            let m = self.shards.get(&shard)?;
            let slow = m.latency.above_at(limit, now)?;
            (slow, m.leader)
        };
        let leader = if measured_under.is_some() { leader() } else { None };
        let stale = leader.is_some() && measured_under != leader;
        if stale {
            if let Some(mut m) = self.shards.get_mut(&shard) {
                m.latency.reset();
                m.leader = leader;
            }
            return None;
        }
        Some(slow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(400);

    #[test]
    fn a_new_leader_is_not_held_to_the_old_ones_latency() {
        let s = ShardSlowness::default();
        let t = Instant::now();
        // Answers that waited on leader 1 going down.
        s.record(4, Some(1), Some(1), Duration::from_secs(3), t);
        assert!(s.above(4, || Some(1), LIMIT, t).is_some(), "slow under leader 1");
        // Node 2 leads now: no refusal, and the old samples are gone.
        let t = t + Duration::from_millis(100);
        assert_eq!(s.above(4, || Some(2), LIMIT, t), None);
        assert_eq!(s.above(4, || Some(1), LIMIT, t), None);
        // A sample answered under the new leader replaces the old ones.
        let s = ShardSlowness::default();
        s.record(4, Some(1), Some(1), Duration::from_secs(3), t);
        s.record(4, Some(2), Some(2), Duration::from_millis(5), t);
        assert_eq!(s.above(4, || Some(2), LIMIT, t), None);
        // Other shards are their own.
        s.record(5, Some(1), Some(1), Duration::from_secs(3), t);
        assert!(s.above(5, || Some(1), LIMIT, t).is_some());
    }

    #[test]
    fn an_attempt_that_outlived_its_leader_says_nothing_about_the_next() {
        let s = ShardSlowness::default();
        let t = Instant::now();
        // A forward to stalled leader 1 ran out after node 2 took over.
        s.record(3, Some(1), Some(2), Duration::from_secs(2), t);
        assert_eq!(s.above(3, || Some(2), LIMIT, t), None);
        // Nor does it erase what was measured under the new leader.
        s.record(3, Some(2), Some(2), Duration::from_secs(1), t);
        s.record(3, Some(1), Some(2), Duration::from_millis(1), t);
        assert!(s.above(3, || Some(2), LIMIT, t).is_some());
        // An attempt begun while no leader was known counts under the one
        // that answered.
        s.record(6, None, Some(2), Duration::from_secs(2), t);
        assert!(s.above(6, || Some(2), LIMIT, t).is_some());
    }

    #[test]
    fn without_a_known_leader_the_estimate_still_counts_and_fades() {
        let s = ShardSlowness::default();
        let t = Instant::now();
        s.record(0, None, None, Duration::from_secs(2), t);
        assert!(s.above(0, || None, LIMIT, t).is_some());
        // Halves every second without news.
        assert_eq!(s.above(0, || None, LIMIT, t + Duration::from_secs(3)), None);
    }
}
