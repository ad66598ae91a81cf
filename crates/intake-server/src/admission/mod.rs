//! Admission: every rule that turns a submission away, and the one policy
//! for how long the client is told to wait ([`delay`]).
//!
//! A surge is refused explicitly and at once (RESOURCE_EXHAUSTED with a
//! retry delay), never by letting work pile up: queued work holds memory and
//! makes everyone late. Emergencies come first at every bound. The rules, in
//! the order a submission meets them:
//! 1. at the door ([`Admission::admit_call`]): ordinary complaints are refused
//!    while the runtime runs late (out of CPU; a lower limit while
//!    emergencies are arriving), and every call needs a slot of the node's
//!    call pool, of which ordinary calls may take only a share (the HTTP
//!    door asks before it builds the request, [`early`]);
//! 2. per shard, before routing ([`Admission::admit_shard`]): ordinary
//!    complaints are refused while the shard answers too slowly from here,
//!    or while its leader recently refused what this node forwarded;
//! 3. at the shard leader's queue ([`queue::admit_to_queue`]): bounded
//!    queues, the drain time against the deadline, the standing-queue time;
//! 4. on the way out ([`Admission::turned_away`]): an ordinary refusal at
//!    the door is stretched by how long shedding has lasted ([`streak`]).

pub mod delay;
pub mod early;
pub mod emergency;
pub mod lag;
pub mod latency;
pub mod queue;
pub mod refusal;
pub mod slowness;
pub mod streak;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use intake_core::Priority;
use intake_storage::{NodeId, ShardId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use refusal::{Reason, Refusal};

use crate::config::AdmissionConfig;
use delay::backlog_guess;
use emergency::RecentEmergency;
use lag::RuntimeLag;
use slowness::ShardSlowness;
use streak::ShedStreak;

/// How long after the last emergency the stricter CPU limit for ordinary
/// complaints holds.
const EMERGENCY_MEMORY: Duration = Duration::from_secs(5);
/// A late runtime needs at least a few of its ticks to catch up.
const MIN_CPU_DELAY: Duration = Duration::from_millis(100);
/// After a leader refused forwarded ordinary complaints, they are refused
/// here for half its delay, at most this long.
const MAX_REMOTE_SHED: Duration = Duration::from_secs(1);

/// A call slot, held while the call is in progress.
pub type CallPermit = OwnedSemaphorePermit;

/// The node's admission state, shared by its door and its router.
pub struct Admission {
    cfg: AdmissionConfig,
    /// Submit calls in progress here from clients, and forwarded from other
    /// nodes: the node-wide bound on memory held by requests, whichever shard
    /// they are for. Two pools, because a client's batch holds its slot
    /// while its groups are forwarded: with one pool, the batches arriving
    /// here could take every slot and starve the forwarded groups they (and
    /// other nodes' batches) wait for.
    calls: Arc<Semaphore>,
    forwarded: Arc<Semaphore>,
    lag: RuntimeLag,
    emergencies: RecentEmergency,
    streak: ShedStreak,
    slowness: ShardSlowness,
    /// Shards whose leader recently shed ordinary complaints forwarded from
    /// here, and until when: ordinary ones are refused here meanwhile, so an
    /// overloaded leader is not also flooded with forwards it will refuse.
    shedding: DashMap<ShardId, Instant>,
}

impl Admission {
    pub fn new(cfg: AdmissionConfig, lag: RuntimeLag) -> Self {
        let slots = cfg.node_requests.max(1);
        Self {
            calls: Arc::new(Semaphore::new(slots)),
            forwarded: Arc::new(Semaphore::new(slots)),
            lag,
            emergencies: RecentEmergency::new(Instant::now()),
            streak: ShedStreak::default(),
            slowness: ShardSlowness::default(),
            shedding: DashMap::new(),
            cfg,
        }
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    /// Notes that an emergency arrived (it lowers the CPU limit).
    pub fn saw_emergency(&self, now: Instant) {
        self.emergencies.note(now);
    }

    /// Rule 1: a slot for one submit call, or a refusal at once. `backlog`
    /// is what this node's leaders have queued, for the retry delay.
    pub fn admit_call(
        &self,
        class: Priority,
        hops: u32,
        backlog: usize,
        now: Instant,
    ) -> Result<CallPermit, Refusal> {
        if class == Priority::Ordinary {
            self.ordinary_cpu(now)?;
        }
        let slots = self.cfg.node_requests.max(1);
        let reserved = match class {
            Priority::Emergency => 0,
            Priority::Ordinary => (slots as f64 * (1.0 - self.ordinary_share(now))) as usize,
        };
        let pool = if hops == 0 { &self.calls } else { &self.forwarded };
        (pool.available_permits() > reserved)
            .then(|| pool.clone().try_acquire_owned().ok())
            .flatten()
            .ok_or_else(|| {
                Refusal::new(
                    Reason::NodeBusy,
                    backlog_guess(Duration::from_millis(100), backlog, 1024),
                )
            })
    }

    /// The share of the call slots ordinary calls may hold: half the usual
    /// while emergencies are arriving. A slot held is a call waiting on a
    /// queue and on this node's CPU; in a 5x unary surge ordinary calls held
    /// their whole 3/4, emergencies slowed behind them, then held the last
    /// quarter and were refused (docs/benchmarks.md). Outside a surge far
    /// fewer calls are in progress than either bound.
    fn ordinary_share(&self, now: Instant) -> f64 {
        if self.emergencies.within(EMERGENCY_MEMORY, now) {
            self.cfg.ordinary_share / 2.0
        } else {
            self.cfg.ordinary_share
        }
    }

    /// Ordinary complaints are refused while this node's runtime runs late:
    /// it is out of CPU, and emergencies need what is left.
    pub fn ordinary_cpu(&self, now: Instant) -> Result<(), Refusal> {
        let limit = if self.emergencies.within(EMERGENCY_MEMORY, now) {
            self.cfg.emergency_runtime_lag.min(self.cfg.max_runtime_lag)
        } else {
            self.cfg.max_runtime_lag
        };
        match self.lag.above_at(limit, now) {
            Some(lag) => Err(Refusal::new(Reason::OutOfCpu, (lag * 4).max(MIN_CPU_DELAY))),
            None => Ok(()),
        }
    }

    /// Rule 2, for ordinary complaints bound for `shard`: refused while the
    /// shard answers too slowly from this door (`leader` names its leader as
    /// this node knows it, to drop an estimate made under another), or
    /// while its leader recently shed what this node forwarded. A forwarded
    /// call (`hops > 0`) was judged slow or not at its door already.
    pub fn admit_shard(
        &self,
        shard: ShardId,
        hops: u32,
        leader: impl FnOnce() -> Option<NodeId>,
        now: Instant,
    ) -> Result<(), Refusal> {
        if hops == 0
            && let Some(slow) = self
                .slowness
                .above(shard, leader, self.cfg.target_latency * 2, now)
        {
            return Err(Refusal::new(Reason::ShardSlow(shard), slow));
        }
        let until = self.shedding.get(&shard).map(|u| *u.value());
        match until.map(|u| u.saturating_duration_since(now)) {
            Some(left) if !left.is_zero() => Err(Refusal::new(Reason::ShardAtCapacity(shard), left)),
            _ => Ok(()),
        }
    }

    /// How long a submission to `shard` took from this door, measured from
    /// the attempt that got the answer, which began under `asked` and ended
    /// under `leader` (as this node knows them).
    pub fn took(
        &self,
        shard: ShardId,
        asked: Option<NodeId>,
        leader: Option<NodeId>,
        took: Duration,
        now: Instant,
    ) {
        self.slowness.record(shard, asked, leader, took, now);
    }

    /// The leader's node refused ordinary complaints forwarded from here,
    /// asking for `delay`: refuse them here for half of it, so the refusal
    /// costs this node alone.
    pub fn peer_shed(&self, shard: ShardId, delay: Duration, now: Instant) {
        self.shedding
            .insert(shard, now + (delay / 2).min(MAX_REMOTE_SHED));
    }

    /// Rule 4: an ordinary complaint refused at the door is told to wait at
    /// least as long as this node's shedding has lasted; anything else
    /// passes unchanged.
    pub fn turned_away(&self, refusal: Refusal, class: Priority, hops: u32, now: Instant) -> Refusal {
        if class == Priority::Ordinary && hops == 0 {
            refusal.no_sooner_than(self.streak.refused(now))
        } else {
            refusal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(cfg: AdmissionConfig) -> (Admission, RuntimeLag) {
        let lag = RuntimeLag::default();
        (Admission::new(cfg, lag.clone()), lag)
    }

    /// 8 call slots, of which ordinary calls may hold 3/4.
    fn eight_slots() -> Admission {
        admission(AdmissionConfig {
            node_requests: 8,
            ordinary_share: 0.75,
            ..AdmissionConfig::default()
        })
        .0
    }

    /// `n` call slots for `class` from clients, each of which must be given.
    fn take(a: &Admission, class: Priority, n: usize, at: Instant) -> Vec<CallPermit> {
        (0..n).map(|_| a.admit_call(class, 0, 0, at).unwrap()).collect()
    }

    #[test]
    fn ordinary_calls_leave_a_share_of_the_slots_to_emergencies() {
        let a = eight_slots();
        let now = Instant::now();
        let held = take(&a, Priority::Ordinary, 6, now);
        let refused = a.admit_call(Priority::Ordinary, 0, 0, now).unwrap_err();
        assert_eq!(refused.reason, Reason::NodeBusy);
        let e1 = a.admit_call(Priority::Emergency, 0, 0, now).unwrap();
        let e2 = a.admit_call(Priority::Emergency, 0, 0, now).unwrap();
        assert!(
            a.admit_call(Priority::Emergency, 0, 0, now).is_err(),
            "all 8 taken"
        );
        assert!(
            a.admit_call(Priority::Ordinary, 1, 0, now).is_ok(),
            "forwarded calls have their own pool"
        );
        drop((held, e1, e2));
        assert!(a.admit_call(Priority::Ordinary, 0, 0, now).is_ok());
    }

    #[test]
    fn ordinary_calls_hold_half_their_share_while_emergencies_arrive() {
        let a = eight_slots();
        let now = Instant::now();
        a.saw_emergency(now);
        // 3 of 8 (3/8 of the slots), not 6.
        let held = take(&a, Priority::Ordinary, 3, now);
        assert_eq!(
            a.admit_call(Priority::Ordinary, 0, 0, now).unwrap_err().reason,
            Reason::NodeBusy
        );
        let emergencies = take(&a, Priority::Emergency, 5, now);
        assert!(
            a.admit_call(Priority::Emergency, 0, 0, now).is_err(),
            "all 8 taken"
        );
        drop(emergencies);
        let calm = now + EMERGENCY_MEMORY;
        let more = take(&a, Priority::Ordinary, 3, calm);
        assert!(
            a.admit_call(Priority::Ordinary, 0, 0, calm).is_err(),
            "6 of 8 once the emergencies stopped"
        );
        drop((held, more));
    }

    #[test]
    fn a_late_runtime_refuses_ordinary_complaints_sooner_while_emergencies_arrive() {
        let (a, lag) = admission(AdmissionConfig::default());
        let now = Instant::now();
        lag.record_at(Duration::from_millis(50), now);
        assert!(
            a.admit_call(Priority::Ordinary, 0, 0, now).is_ok(),
            "50 ms is under 100"
        );
        a.saw_emergency(now);
        let refused = a.admit_call(Priority::Ordinary, 0, 0, now).unwrap_err();
        assert_eq!(refused.reason, Reason::OutOfCpu);
        assert_eq!(refused.retry_after, Duration::from_millis(200));
        assert!(a.admit_call(Priority::Emergency, 0, 0, now).is_ok());
        let calm = now + EMERGENCY_MEMORY;
        lag.record_at(Duration::from_millis(50), calm);
        assert!(a.ordinary_cpu(calm).is_ok(), "the stricter limit fades");
    }

    #[test]
    fn a_slow_shard_refuses_at_the_door_only_and_a_peers_shedding_is_remembered_briefly() {
        let (a, _) = admission(AdmissionConfig::default());
        let now = Instant::now();
        a.took(2, Some(1), Some(1), Duration::from_secs(3), now);
        let refused = a.admit_shard(2, 0, || Some(1), now).unwrap_err();
        assert_eq!(refused.reason, Reason::ShardSlow(2));
        assert!(
            a.admit_shard(2, 1, || Some(1), now).is_ok(),
            "forwarded: judged at its door"
        );
        assert!(
            a.admit_shard(2, 0, || Some(3), now).is_ok(),
            "measured under another leader"
        );

        a.peer_shed(5, Duration::from_secs(10), now);
        let refused = a.admit_shard(5, 0, || None, now).unwrap_err();
        assert_eq!(refused.reason, Reason::ShardAtCapacity(5));
        assert_eq!(refused.retry_after, MAX_REMOTE_SHED);
        assert!(a.admit_shard(5, 0, || None, now + MAX_REMOTE_SHED).is_ok());
    }

    #[test]
    fn only_ordinary_refusals_at_the_door_are_stretched_by_a_streak() {
        let (a, _) = admission(AdmissionConfig::default());
        let t = Instant::now();
        let r = || Refusal::new(Reason::OutOfCpu, Duration::from_millis(100));
        a.turned_away(r(), Priority::Ordinary, 0, t);
        let later = t + Duration::from_millis(900);
        let stretched = a.turned_away(r(), Priority::Ordinary, 0, later);
        assert!(
            stretched.retry_after >= Duration::from_millis(900),
            "{stretched:?}"
        );
        assert_eq!(
            a.turned_away(r(), Priority::Emergency, 0, later).retry_after,
            r().retry_after
        );
        assert_eq!(
            a.turned_away(r(), Priority::Ordinary, 1, later).retry_after,
            r().retry_after
        );
    }
}
