//! The rules for joining a shard leader's queue, decided when a submission
//! arrives, never by waiting:
//! - each shard's queue and the node's total are bounded, and ordinary
//!   complaints may fill only a share of either, so emergencies still find
//!   room when ordinary traffic is being shed;
//! - a submission that would wait past its deadline, at the measured drain
//!   rate, is refused at once rather than timing out later;
//! - while ordinary complaints take longer than the latency target from
//!   queue to commit (a standing queue, as CoDel sees it), new ordinary
//!   ones are refused.
//!
//! Pure: the batcher passes in what it measured and applies the answer.

use std::time::Duration;

use intake_core::Priority;
use intake_storage::ShardId;
use tokio::time::Instant;

use super::delay::{backlog_guess, drain_time};
use super::refusal::{Reason, Refusal};
use crate::config::AdmissionConfig;

/// What the batcher knows when a submission arrives.
#[derive(Debug, Clone, Copy)]
pub struct QueueState {
    /// Complaints queued on this shard, by class.
    pub emergency_items: usize,
    pub ordinary_items: usize,
    /// Complaints queued on every shard this node leads.
    pub node_items: usize,
    /// Complaints committed per second while a backlog waited, if measured.
    pub drain_per_sec: Option<f64>,
    /// The smoothed queue-to-commit time, if above the latency target.
    pub sojourn_above_target: Option<Duration>,
}

/// Whether `n` complaints of `class`, due by `deadline`, may join `shard`'s
/// queue.
pub fn admit_to_queue(
    cfg: &AdmissionConfig,
    shard: ShardId,
    q: &QueueState,
    class: Priority,
    n: usize,
    deadline: Instant,
    now: Instant,
) -> Result<(), Refusal> {
    let at_capacity = |estimate| Err(Refusal::new(Reason::ShardAtCapacity(shard), estimate));
    let share = match class {
        Priority::Emergency => 1.0,
        Priority::Ordinary => cfg.ordinary_share,
    };
    let queued = q.emergency_items + q.ordinary_items;
    // Emergencies only queue behind emergencies. Proposals already in
    // flight are not counted: they replicate in parallel with the next one,
    // and a standing queue shows in the sojourn time.
    let ahead = match class {
        Priority::Emergency => q.emergency_items,
        Priority::Ordinary => queued,
    } + n;
    let drain = drain_time(ahead, q.drain_per_sec);
    if queued + n > (cfg.shard_queue as f64 * share) as usize
        || q.node_items + n > (cfg.node_queue as f64 * share) as usize
    {
        return at_capacity(drain.unwrap_or_else(|| backlog_guess(Duration::from_millis(100), ahead, 256)));
    }
    if let Some(wait) = drain
        && now + wait > deadline
    {
        return at_capacity(wait);
    }
    if class == Priority::Ordinary
        && let Some(sojourn) = q.sojourn_above_target
    {
        return at_capacity(sojourn);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> QueueState {
        QueueState {
            emergency_items: 0,
            ordinary_items: 0,
            node_items: 0,
            drain_per_sec: None,
            sojourn_above_target: None,
        }
    }

    #[test]
    fn ordinary_complaints_fill_only_their_share_and_emergencies_the_rest() {
        let cfg = AdmissionConfig::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(2);
        let share = (cfg.shard_queue as f64 * cfg.ordinary_share) as usize;
        let q = QueueState {
            ordinary_items: share,
            node_items: share,
            ..empty()
        };
        let refused = admit_to_queue(&cfg, 3, &q, Priority::Ordinary, 1, later, now).unwrap_err();
        assert_eq!(refused.reason, Reason::ShardAtCapacity(3));
        assert!(
            refused.retry_after > Duration::from_millis(100),
            "grows with the backlog"
        );
        assert_eq!(
            admit_to_queue(&cfg, 3, &q, Priority::Emergency, 1, later, now),
            Ok(())
        );
        let full = QueueState {
            emergency_items: cfg.shard_queue - share,
            ..q
        };
        assert!(admit_to_queue(&cfg, 3, &full, Priority::Emergency, 1, later, now).is_err());
    }

    #[test]
    fn a_wait_past_the_deadline_is_refused_at_once_emergencies_counting_only_emergencies() {
        let cfg = AdmissionConfig::default();
        let now = Instant::now();
        let q = QueueState {
            ordinary_items: 1000,
            node_items: 1000,
            drain_per_sec: Some(1000.0),
            ..empty()
        };
        let soon = now + Duration::from_millis(500);
        let refused = admit_to_queue(&cfg, 0, &q, Priority::Ordinary, 1, soon, now).unwrap_err();
        assert!(refused.retry_after >= Duration::from_millis(1000), "{refused:?}");
        assert_eq!(
            admit_to_queue(&cfg, 0, &q, Priority::Emergency, 1, soon, now),
            Ok(())
        );
    }

    #[test]
    fn a_standing_queue_refuses_ordinary_complaints_only() {
        let cfg = AdmissionConfig::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(2);
        let q = QueueState {
            sojourn_above_target: Some(Duration::from_millis(700)),
            ..empty()
        };
        let refused = admit_to_queue(&cfg, 1, &q, Priority::Ordinary, 1, later, now).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(700));
        assert_eq!(
            admit_to_queue(&cfg, 1, &q, Priority::Emergency, 1, later, now),
            Ok(())
        );
    }
}
