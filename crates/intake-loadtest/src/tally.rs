//! Counting outcomes: totals, per class, per phase, per second, and every
//! ticket id each acknowledged key was answered with (for verification).

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds up to two minutes.
const MAX_LATENCY_US: u64 = 120_000_000;

pub fn histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts: no input can make this fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Outcomes of a group of complaints (a class, a phase, or a second).
#[derive(Default, Clone, Copy, Debug, serde::Serialize)]
pub struct Counts {
    pub offered: u64,
    pub acked: u64,
    pub rejected: u64,
    pub errors: u64,
}

/// One second of the run, counted when things happened: offered at the
/// scheduled arrival, outcomes when the answer came.
#[derive(Default)]
pub struct Second {
    pub counts: Counts,
    /// The emergencies among `counts` (offered stays 0: it is not split).
    pub emergency: Counts,
    /// Latencies of the acknowledgements that came in this second.
    pub latency: Option<Histogram<u64>>,
}

#[derive(Default)]
pub struct Tally {
    pub acked: u64,
    pub rejected: u64,
    pub errors: u64,
    /// Arrivals dropped by this tool because every in-flight slot was busy.
    pub dropped: u64,
    /// Attempts after a request's first.
    pub retries: u64,
    /// Requests that wanted another attempt but the retry budget said no.
    pub retries_throttled: u64,
    /// Requests resent at once to another endpoint because their connection
    /// was refused: they never reached a node, so this is no retry.
    pub resent_unsent: u64,
    /// Ordinary complaints the client-side throttle refused without sending
    /// (counted in `rejected` too).
    pub client_throttled: u64,
    /// Errors other than drops, by gRPC code.
    pub error_codes: BTreeMap<String, u64>,
    /// The part of `error_codes` that were emergencies: whether they timed
    /// out at this tool or were answered late tells where they waited.
    pub emergency_error_codes: BTreeMap<String, u64>,
    /// The first message seen per code (refusals included).
    pub error_samples: BTreeMap<String, String>,
    pub emergency: Counts,
    pub ordinary: Counts,
    /// Per phase, by index.
    pub phases: Vec<Counts>,
    /// Per second since the start.
    pub seconds: Vec<Second>,
    /// Every ticket id each key was answered with.
    pub tickets: HashMap<String, Vec<String>>,
}

/// What happened to one complaint.
pub enum Outcome {
    Acked(String),
    Rejected,
    /// A gRPC code name, or `NotSent` when the tool itself was too late.
    Error(String),
}

impl Tally {
    fn second(&mut self, s: usize) -> &mut Second {
        // Bounded by the run's length in seconds; a day-long run is 86,400.
        if self.seconds.len() <= s {
            self.seconds.resize_with(s + 1, Second::default);
        }
        &mut self.seconds[s]
    }

    fn phase(&mut self, p: usize) -> &mut Counts {
        if self.phases.len() <= p {
            self.phases.resize_with(p + 1, Counts::default);
        }
        &mut self.phases[p]
    }

    pub fn offered(&mut self, phase: usize, second: usize, n: u64) {
        self.second(second).counts.offered += n;
        self.phase(phase).offered += n;
    }

    /// An arrival this tool could not send (all slots busy): an error.
    pub fn dropped(&mut self, phase: usize, second: usize, n: u64) {
        self.offered(phase, second, n);
        self.dropped += n;
        self.errors += n;
        self.second(second).counts.errors += n;
        self.phase(phase).errors += n;
    }

    pub fn sample_error(&mut self, code: &str, message: &str) {
        self.error_samples
            .entry(code.to_string())
            .or_insert_with(|| message.chars().take(200).collect());
    }

    pub fn latency(&mut self, second: usize, us: u64) {
        let h = self.second(second).latency.get_or_insert_with(histogram);
        let _ = h.record(us.clamp(1, MAX_LATENCY_US));
    }

    pub fn record(&mut self, phase: usize, second: usize, key: &str, emergency: bool, outcome: Outcome) {
        let class = if emergency {
            &mut self.emergency
        } else {
            &mut self.ordinary
        };
        class.offered += 1;
        let mut counts = Counts::default();
        match outcome {
            Outcome::Acked(ticket) => {
                class.acked += 1;
                self.acked += 1;
                counts.acked = 1;
                self.tickets.entry(key.to_string()).or_default().push(ticket);
            }
            Outcome::Rejected => {
                class.rejected += 1;
                self.rejected += 1;
                counts.rejected = 1;
            }
            Outcome::Error(code) => {
                class.errors += 1;
                self.errors += 1;
                counts.errors = 1;
                if emergency {
                    *self.emergency_error_codes.entry(code.clone()).or_default() += 1;
                }
                *self.error_codes.entry(code).or_default() += 1;
            }
        }
        let sec = self.second(second);
        add(&mut sec.counts, &counts);
        if emergency {
            add(&mut sec.emergency, &counts);
        }
        add(self.phase(phase), &counts);
    }
}

fn add(to: &mut Counts, c: &Counts) {
    to.acked += c.acked;
    to.rejected += c.rejected;
    to.errors += c.errors;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emergency_errors_are_also_counted_apart_by_code() {
        let mut t = Tally::default();
        t.record(0, 0, "e1", true, Outcome::Error("Cancelled".into()));
        t.record(0, 0, "o1", false, Outcome::Error("Cancelled".into()));
        t.record(0, 0, "e2", true, Outcome::Error("DeadlineExceeded".into()));
        t.record(0, 0, "e3", true, Outcome::Rejected);
        assert_eq!(t.error_codes["Cancelled"], 2);
        assert_eq!(
            t.emergency_error_codes,
            BTreeMap::from([("Cancelled".to_string(), 1), ("DeadlineExceeded".to_string(), 1)])
        );
        assert_eq!((t.emergency.errors, t.emergency.rejected), (2, 1));
    }
}
