//! A refused submission: why, and when to come back.

use std::fmt;
use std::time::Duration;

use intake_storage::ShardId;

use super::delay::retry_after;

/// Which bound turned a submission away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Every call slot of this node is taken.
    NodeBusy,
    /// This node's runtime runs late: it is out of CPU.
    OutOfCpu,
    /// The shard answers too slowly from this node to take ordinary work.
    ShardSlow(ShardId),
    /// The shard's queue (here, or at its leader) is full, or would not
    /// drain before the deadline.
    ShardAtCapacity(ShardId),
    /// The caller's token is over its rate limit (`--auth`).
    RateLimited(String),
    /// Another node refused it; its words are passed on.
    Peer(String),
}

impl Reason {
    /// Every value [`Reason::label`] gives.
    pub const LABELS: [&'static str; 6] = [
        "node_busy",
        "out_of_cpu",
        "shard_slow",
        "shard_at_capacity",
        "rate_limited",
        "peer",
    ];

    /// The metric label of this reason: a fixed set, whatever the shard or
    /// token (`intake_submit_refused_total`).
    pub fn label(&self) -> &'static str {
        match self {
            Reason::NodeBusy => "node_busy",
            Reason::OutOfCpu => "out_of_cpu",
            Reason::ShardSlow(_) => "shard_slow",
            Reason::ShardAtCapacity(_) => "shard_at_capacity",
            Reason::RateLimited(_) => "rate_limited",
            Reason::Peer(_) => "peer",
        }
    }
}

/// A submission turned away at once, with the delay after which a retry
/// (with the same idempotency key) may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub retry_after: Duration,
}

impl Refusal {
    /// A refusal whose delay follows from `estimate` by the one policy.
    pub fn new(reason: Reason, estimate: Duration) -> Self {
        Self {
            reason,
            retry_after: retry_after(estimate),
        }
    }

    /// The same refusal, telling the client to wait at least `floor`.
    pub fn no_sooner_than(self, floor: Duration) -> Self {
        let after = self.retry_after.max(retry_after(floor));
        Self {
            retry_after: if floor.is_zero() { self.retry_after } else { after },
            ..self
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const RETRY: &str = "retry with the same idempotency key";
        match &self.reason {
            Reason::NodeBusy => write!(f, "this node has too many submissions in progress; {RETRY}"),
            Reason::OutOfCpu => write!(f, "this node is out of CPU; {RETRY}"),
            Reason::ShardSlow(s) => {
                write!(
                    f,
                    "shard {s} answers too slowly to take ordinary complaints now; {RETRY}"
                )
            }
            Reason::ShardAtCapacity(s) => write!(f, "shard {s} is at capacity; {RETRY}"),
            Reason::RateLimited(token) => write!(f, "token {token:?} is over its rate limit"),
            Reason::Peer(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::delay::{MAX_RETRY, MIN_RETRY};

    #[test]
    fn a_floor_only_lengthens_the_delay_and_stays_within_the_bounds() {
        let r = Refusal::new(Reason::OutOfCpu, Duration::from_millis(300));
        assert_eq!(
            r.clone().no_sooner_than(Duration::ZERO).retry_after,
            Duration::from_millis(300)
        );
        assert_eq!(
            r.clone().no_sooner_than(Duration::from_millis(100)).retry_after,
            Duration::from_millis(300)
        );
        assert_eq!(
            r.clone().no_sooner_than(Duration::from_secs(2)).retry_after,
            Duration::from_secs(2)
        );
        assert_eq!(r.no_sooner_than(Duration::from_secs(60)).retry_after, MAX_RETRY);
        assert_eq!(
            Refusal::new(Reason::NodeBusy, Duration::ZERO).retry_after,
            MIN_RETRY
        );
    }

    #[test]
    fn every_label_is_listed_for_the_metric_to_start_at_zero() {
        for r in [
            Reason::NodeBusy,
            Reason::OutOfCpu,
            Reason::ShardSlow(1),
            Reason::ShardAtCapacity(1),
            Reason::RateLimited("t".into()),
            Reason::Peer("p".into()),
        ] {
            assert!(Reason::LABELS.contains(&r.label()), "{r:?}");
        }
    }

    #[test]
    fn messages_name_the_bound_and_ask_for_the_same_key() {
        let m = Refusal::new(Reason::ShardSlow(4), Duration::ZERO).to_string();
        assert!(
            m.contains("shard 4 answers too slowly") && m.ends_with("same idempotency key"),
            "{m}"
        );
        let m = Refusal::new(Reason::Peer("shard 2 is at capacity".into()), Duration::ZERO).to_string();
        assert_eq!(m, "shard 2 is at capacity");
    }
}
