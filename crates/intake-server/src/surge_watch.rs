//! The node's surge watch: counts every committed complaint as apply creates
//! its ticket (on every replica, so no extra Raft round and nothing lost
//! when leadership moves: the new leader has been counting all along), runs
//! the detector (`intake_core::surge`) once a second, and fans its events
//! out to `WatchAlerts` streams, the dispatcher and the dashboard.
//!
//! `intake_complaints_total` is added to once a second is final, by the node
//! leading the district's shard at that moment, so summing the counter over
//! nodes counts each complaint once (a second evaluated around a change of
//! leader may be counted by neither or both).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use intake_core::{ActiveSurge, CategoryTable, DistrictRate, DistrictTable, SurgeConfig};
use intake_core::{SurgeDetector, SurgeEvent, Ticket};
use intake_storage::{ApplyHook, NodeId};
use openraft::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

use crate::registry::Registry;

/// Seconds of baseline a restarted node gathers before it alerts.
const REJOIN_WARMUP_S: f64 = 120.0;

/// Events kept for the dashboard's list of recent changes.
const RECENT: usize = 64;

struct Inner {
    detector: Mutex<SurgeDetector>,
    events: broadcast::Sender<SurgeEvent>,
    recent: Mutex<VecDeque<SurgeEvent>>,
    categories: CategoryTable,
}

/// Cheap to clone; one per node.
#[derive(Clone)]
pub struct SurgeWatch {
    inner: Arc<Inner>,
}

impl SurgeWatch {
    /// `rejoined`: this node restarted into a running cluster (see `node.rs`).
    pub fn new(districts: &DistrictTable, categories: &CategoryTable, rejoined: bool) -> Self {
        let names = categories
            .emergencies()
            .chain(categories.ordinary())
            .map(String::from);
        let mut cfg = SurgeConfig::default();
        if rejoined {
            cfg.warmup_s = REJOIN_WARMUP_S;
        }
        let detector = SurgeDetector::new(cfg, districts.iter().map(|d| d.code.clone()), names);
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                detector: Mutex::new(detector),
                events,
                recent: Mutex::new(VecDeque::new()),
                categories: categories.clone(),
            }),
        }
    }

    /// The surges in progress and a receiver of every later event, taken
    /// together so that nothing falls between them.
    pub fn subscribe(&self) -> (Vec<ActiveSurge>, broadcast::Receiver<SurgeEvent>) {
        let detector = self.inner.detector.lock();
        (detector.active(), self.inner.events.subscribe())
    }

    pub fn active(&self) -> Vec<ActiveSurge> {
        self.inner.detector.lock().active()
    }

    pub fn district_rates(&self) -> Vec<DistrictRate> {
        self.inner.detector.lock().district_rates().to_vec()
    }

    /// The latest events, newest last.
    pub fn recent(&self) -> Vec<SurgeEvent> {
        self.inner.recent.lock().iter().cloned().collect()
    }

    /// Evaluates what is due at `now` (Unix ms) and publishes it; `leads`
    /// says whether this node leads a district's shard (for the counter).
    pub fn tick(&self, now: i64, leads: impl Fn(&str) -> bool) -> Vec<SurgeEvent> {
        let events = {
            let mut detector = self.inner.detector.lock();
            let (events, seconds) = detector.advance(now);
            for s in seconds {
                for (district, category, n) in detector.counts_of(s) {
                    if !leads(district) {
                        continue;
                    }
                    let class = self.inner.categories.priority(category).label();
                    metrics::counter!(
                        "intake_complaints_total",
                        "district" => district.to_string(),
                        "category_class" => class,
                    )
                    .increment(u64::from(n));
                }
            }
            events
        };
        if !events.is_empty() {
            let mut recent = self.inner.recent.lock();
            for e in &events {
                tracing::info!(
                    kind = e.kind.as_str(),
                    district = %e.district,
                    category = %e.category,
                    rate = e.rate,
                    baseline = e.baseline,
                    "surge"
                );
                recent.push_back(e.clone());
                while recent.len() > RECENT {
                    recent.pop_front();
                }
                // No receiver is fine: nobody is watching.
                let _ = self.inner.events.send(e.clone());
            }
        }
        metrics::gauge!("intake_surges_active").set(self.inner.detector.lock().active().len() as f64);
        events
    }
}

impl ApplyHook for SurgeWatch {
    fn created(&self, ticket: &Ticket) {
        let c = &ticket.complaint;
        self.inner
            .detector
            .lock()
            .observe(ticket.accepted_at, &c.district, &c.category, 1);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Ticks the watch a little after each second, until `stop`.
pub async fn run(watch: SurgeWatch, node: NodeId, registry: Registry, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let map = registry.map();
        let leads = |district: &str| {
            map.shard_for(district, 0)
                .and_then(|shard| registry.raft(shard))
                .is_some_and(|raft| raft.metrics().borrow_watched().current_leader == Some(node))
        };
        watch.tick(now_ms(), leads);
    }
}
