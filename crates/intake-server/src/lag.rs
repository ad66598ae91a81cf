//! Runtime lag: how late a timer that should fire every 20 ms actually fires.
//!
//! When a node runs out of CPU, requests wait in the runtime's queues before
//! any of our code sees them, so no per-request measurement notices; by the
//! time a handler runs, its caller may already have given up. A late timer
//! shows that queueing directly (the "event-loop lag" of toobusy-style load
//! shedders), and lets the door refuse ordinary complaints cheaply while it
//! lasts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::latency::FadingLatency;

const TICK: Duration = Duration::from_millis(20);

#[derive(Debug, Default, Clone)]
pub struct RuntimeLag {
    lag: Arc<FadingLatency>,
}

impl RuntimeLag {
    /// Starts sampling until `stop` fires.
    pub fn start(mut stop: watch::Receiver<bool>) -> RuntimeLag {
        let lag = RuntimeLag::default();
        let sampler = lag.clone();
        tokio::spawn(async move {
            loop {
                let before = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let late = before.elapsed().saturating_sub(TICK);
                sampler.lag.record(late);
                metrics::gauge!("intake_runtime_lag_seconds")
                    .set(sampler.lag.get().unwrap_or_default().as_secs_f64());
            }
        });
        lag
    }

    /// The smoothed lag, if above `limit`.
    pub fn above(&self, limit: Duration) -> Option<Duration> {
        self.lag.above(limit)
    }
}
