//! Which endpoints refused a connection, and when to try them again.
//!
//! A killed node refuses connections until it is back. Chosen in turn like
//! the others, it cost every request sent its way a failed attempt and a
//! token of the retry budget, and once the budget was spent the retries that
//! would have reached a live node were refused too: in the rainstorm
//! scenario 10 % of emergencies failed while one node was down. So an
//! endpoint that refused a connection leaves the rotation, and one request
//! at a time probes it again after a backoff (200 ms doubling to 5 s) until
//! it answers. Used by [`crate::Client`] and by `intake load`'s engine.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::{Code, Status};

/// The first wait before a refused endpoint is tried again.
pub const PROBE_FIRST: Duration = Duration::from_millis(200);
/// The longest: a node back from a restart is used again within this.
pub const PROBE_MAX: Duration = Duration::from_secs(5);

/// Whether a failed call never reached a server: the connection could not
/// be opened (refused, or its connect timed out), so nothing was sent. Such
/// a call is safe to resend anywhere at once, as gRPC's transparent retries
/// do. tonic reports it as a bare UNAVAILABLE carrying the connector's
/// message; a server's UNAVAILABLE always carries `RetryInfo`, so one
/// relayed from a forwarding node (whose outcome is unknown) is never taken
/// for this; a connect failure that does not match counts as sent, which is
/// the safe side.
pub fn never_sent(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && status.details().is_empty()
        && status.message().starts_with("tcp connect error")
}

#[derive(Debug, Clone, Copy)]
struct Down {
    /// The wait before the next probe, doubled by each refusal.
    backoff: Duration,
    /// Until then, the endpoint is out of rotation.
    next_probe: Instant,
}

/// The endpoints that refused a connection, shared by all calls of a client.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    down: Mutex<HashMap<String, Down>>,
    /// How many are down, so the common case (none) takes no lock.
    count: AtomicUsize,
}

impl EndpointHealth {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Down>> {
        self.down.lock()
    }

    /// Whether `addr` is out of rotation at `now`: it refused a connection
    /// and its next probe is not due yet.
    pub fn is_down(&self, addr: &str, now: Instant) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.lock().get(addr).is_some_and(|d| now < d.next_probe)
    }

    /// A request is about to go to `addr`. If it is a probe of an endpoint
    /// that refused, the next probe is pushed back, so that one request at a
    /// time pays for finding out (a connect that hangs costs its timeout).
    pub fn sending(&self, addr: &str, now: Instant) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(d) = self.lock().get_mut(addr) {
            d.next_probe = d.next_probe.max(now + d.backoff);
        }
    }

    /// `addr` refused a connection (or did not open one in time) at `now`.
    pub fn refused(&self, addr: &str, now: Instant) {
        let mut down = self.lock();
        let backoff = match down.get(addr) {
            Some(d) => (d.backoff * 2).min(PROBE_MAX),
            None => PROBE_FIRST,
        };
        down.insert(
            addr.to_string(),
            Down {
                backoff,
                next_probe: now + backoff,
            },
        );
        self.count.store(down.len(), Ordering::Relaxed);
    }

    /// `addr` answered (anything at all): it is back in rotation.
    pub fn answered(&self, addr: &str) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut down = self.lock();
        down.remove(addr);
        self.count.store(down.len(), Ordering::Relaxed);
    }

    /// Index of the first of `candidates`, from `start` round the ring, that
    /// is not out of rotation; `start` if all are.
    pub fn pick<S: AsRef<str>>(&self, candidates: &[S], start: usize, now: Instant) -> usize {
        let n = candidates.len().max(1);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|i| candidates.get(*i).is_some_and(|c| !self.is_down(c.as_ref(), now)))
            .unwrap_or(start % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn a_refused_endpoint_leaves_the_rotation_until_its_probe_is_due() {
        let h = EndpointHealth::new();
        let t = Instant::now();
        let eps = ["a", "b", "c"];
        assert_eq!(h.pick(&eps, 1, t), 1);
        h.refused("b", t);
        assert!(h.is_down("b", t));
        assert_eq!(h.pick(&eps, 1, t), 2, "b is skipped");
        // Due for a probe after 200 ms; the probe claims the slot.
        let t1 = t + PROBE_FIRST;
        assert!(!h.is_down("b", t1));
        h.sending("b", t1);
        assert!(h.is_down("b", t1), "one probe at a time");
        // Refused again: the wait doubles, up to the cap.
        h.refused("b", t1);
        assert!(h.is_down("b", t1 + PROBE_FIRST));
        assert!(!h.is_down("b", t1 + PROBE_FIRST * 2));
        for _ in 0..20 {
            h.refused("b", t1);
        }
        assert!(h.is_down("b", t1 + PROBE_MAX - Duration::from_millis(1)));
        assert!(!h.is_down("b", t1 + PROBE_MAX));
        // It answered: back at once.
        h.answered("b");
        assert!(!h.is_down("b", t1));
        assert_eq!(h.pick(&eps, 1, t1), 1);
    }

    #[test]
    fn with_every_endpoint_down_the_turn_is_kept() {
        let h = EndpointHealth::new();
        let t = Instant::now();
        for e in ["a", "b"] {
            h.refused(e, t);
        }
        assert_eq!(h.pick(&["a", "b"], 3, t), 1);
    }

    #[test]
    fn only_a_connect_failure_counts_as_never_sent() {
        assert!(never_sent(&Status::unavailable(
            "tcp connect error: Connection refused (os error 111)"
        )));
        assert!(!never_sent(&Status::unavailable("node 2 does not lead shard 1")));
        assert!(!never_sent(&Status::unknown("tcp connect error")));
        let relayed = Status::with_error_details(
            Code::Unavailable,
            "tcp connect error",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(50))),
        );
        assert!(!never_sent(&relayed));
    }
}
