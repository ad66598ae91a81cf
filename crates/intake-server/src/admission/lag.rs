//! Runtime lag: how late a timer that should fire every 20 ms actually fires.
//!
//! When a node runs out of CPU, requests wait in the runtime's queues before
//! any of our code sees them, so no per-request measurement notices; by the
//! time a handler runs, its caller may already have given up. A late timer
//! shows that queueing directly (the "event-loop lag" of toobusy-style load
//! shedders), and lets the door refuse ordinary complaints cheaply while it
//! lasts.
//!
//! A stall is not overload. A process that was stopped (SIGSTOP, a VM pause,
//! a long GC-like freeze) sees one tick seconds late and punctual ticks right
//! after; fed to the moving average, that one tick read as seconds of lag
//! and the node refused its whole backlog as "out of CPU" for 4 s and more,
//! longer than what was left of the callers' deadlines, although it had CPU
//! to spare. So each tick records the median of the last three ticks'
//! lateness: a lone outlier, however large, never gets in, while lateness
//! that lasts (a real surge) does from its second tick on, one tick later
//! than before.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::latency::FadingLatency;

const TICK: Duration = Duration::from_millis(20);
/// Ticks whose median is recorded: three is the fewest that outvotes one
/// stall.
const WINDOW: usize = 3;

#[derive(Debug, Default, Clone)]
pub struct RuntimeLag {
    lag: Arc<FadingLatency>,
}

impl RuntimeLag {
    /// Starts sampling until `stop` fires.
    pub fn start(mut stop: watch::Receiver<bool>) -> RuntimeLag {
        let lag = RuntimeLag::default();
        let mut probe = Probe::new(lag.clone());
        tokio::spawn(async move {
            loop {
                let before = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let now = Instant::now();
                probe.tick(now.saturating_duration_since(before).saturating_sub(TICK), now);
                metrics::gauge!("intake_runtime_lag_seconds")
                    .set(probe.lag.lag.get_at(now).unwrap_or_default().as_secs_f64());
            }
        });
        lag
    }

    /// The smoothed lag, if above `limit`.
    pub fn above(&self, limit: Duration) -> Option<Duration> {
        self.lag.above(limit)
    }

    /// As [`RuntimeLag::above`], at `now`.
    pub fn above_at(&self, limit: Duration, now: Instant) -> Option<Duration> {
        self.lag.above_at(limit, now)
    }

    /// Records a measured lag, as the probe does; for tests of the rules.
    #[cfg(test)]
    pub(crate) fn record_at(&self, late: Duration, now: Instant) {
        self.lag.record_at(late, now);
    }
}

/// The sampler's side: the last ticks' lateness, and where their median goes.
struct Probe {
    lag: RuntimeLag,
    recent: [Duration; WINDOW],
    next: usize,
}

impl Probe {
    fn new(lag: RuntimeLag) -> Self {
        Self {
            lag,
            recent: [Duration::ZERO; WINDOW],
            next: 0,
        }
    }

    /// One tick that fired `late` after its time, at `now`.
    fn tick(&mut self, late: Duration, now: Instant) {
        self.recent[self.next] = late;
        self.next = (self.next + 1) % WINDOW;
        let mut sorted = self.recent;
        sorted.sort_unstable();
        self.lag.lag.record_at(sorted[WINDOW / 2], now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(100);
    const EMERGENCY_LIMIT: Duration = Duration::from_millis(20);

    /// Ticks that each fire `late` after their time; returns the clock.
    fn ticks(probe: &mut Probe, mut now: Instant, n: usize, late: Duration) -> Instant {
        for _ in 0..n {
            now += TICK + late;
            probe.tick(late, now);
        }
        now
    }

    #[test]
    fn one_stall_is_not_overload() {
        let lag = RuntimeLag::default();
        let mut probe = Probe::new(lag.clone());
        let t = ticks(&mut probe, Instant::now(), 10, Duration::ZERO);
        // Paused for 5 s, then resumed: one tick 5 s late, then punctual.
        let stall = Duration::from_secs(5);
        let t = ticks(&mut probe, t, 1, stall);
        assert_eq!(
            lag.lag.above_at(EMERGENCY_LIMIT, t),
            None,
            "right after the stall"
        );
        let t = ticks(&mut probe, t, 2, Duration::ZERO);
        assert_eq!(lag.lag.above_at(EMERGENCY_LIMIT, t), None, "two ticks on");
    }

    #[test]
    fn sustained_lateness_is_overload() {
        let lag = RuntimeLag::default();
        let mut probe = Probe::new(lag.clone());
        let t = ticks(&mut probe, Instant::now(), 10, Duration::ZERO);
        let t = ticks(&mut probe, t, 10, Duration::from_millis(50));
        assert!(lag.lag.above_at(EMERGENCY_LIMIT, t).is_some());
        assert_eq!(lag.lag.above_at(LIMIT, t), None);
        let t = ticks(&mut probe, t, 10, Duration::from_millis(150));
        assert!(lag.lag.above_at(LIMIT, t).is_some());
        // Two stalls in a row are no longer a lone outlier.
        let lag = RuntimeLag::default();
        let mut probe = Probe::new(lag.clone());
        let t = ticks(&mut probe, Instant::now(), 2, Duration::from_secs(2));
        assert!(lag.lag.above_at(LIMIT, t).is_some());
    }
}
