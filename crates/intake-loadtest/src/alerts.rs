//! Surge alerts seen during a run: one `WatchAlerts` stream per endpoint,
//! reconnected while the run lasts (nodes die in fault scenarios), merged
//! into the alerts of the report. Each node runs its own detector; an alert
//! is up from the first node raising it to the last clearing it, and a
//! node whose stream broke counts as having cleared it then (its peers
//! carry on, and on reconnecting it reports what it still holds).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use intake_proto::pb;
use intake_proto::pb::admin_service_client::AdminServiceClient;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinHandle;

/// One surge as the report lists it: seconds since the run's start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertSpan {
    pub district: String,
    pub category: String,
    pub raised_s: f64,
    /// `None` (JSON null) while still active at the end of the run.
    pub cleared_s: Option<f64>,
}

/// (endpoint, district, category) → when it went up, per interval.
#[derive(Default)]
struct Seen {
    open: HashMap<(usize, String, String), f64>,
    closed: Vec<(String, String, f64, f64)>,
}

impl Seen {
    fn raise(&mut self, node: usize, d: &str, c: &str, t: f64) {
        self.open.entry((node, d.to_string(), c.to_string())).or_insert(t);
    }

    fn clear(&mut self, node: usize, d: &str, c: &str, t: f64) {
        if let Some(from) = self.open.remove(&(node, d.to_string(), c.to_string())) {
            self.closed.push((d.to_string(), c.to_string(), from, t));
        }
    }

    fn drop_node(&mut self, node: usize, t: f64) {
        let keys: Vec<_> = self.open.keys().filter(|k| k.0 == node).cloned().collect();
        for k in keys {
            self.clear(node, &k.1, &k.2, t);
        }
    }
}

/// Watches every endpoint until [`AlertWatch::finish`].
pub struct AlertWatch {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
    start: Instant,
}

impl AlertWatch {
    pub fn start(endpoints: &[String], start: Instant) -> AlertWatch {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let tasks = endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| tokio::spawn(watch(i, ep.clone(), seen.clone(), start)))
            .collect();
        AlertWatch { seen, tasks, start }
    }

    /// Stops watching; the alerts, merged over nodes, by raise time.
    pub fn finish(self) -> Vec<AlertSpan> {
        for t in &self.tasks {
            t.abort();
        }
        let seen = self.seen.lock();
        let end = self.start.elapsed().as_secs_f64();
        let mut by_key: HashMap<(String, String), Vec<(f64, f64)>> = HashMap::new();
        for (d, c, from, to) in &seen.closed {
            by_key
                .entry((d.clone(), c.clone()))
                .or_default()
                .push((*from, *to));
        }
        for ((_, d, c), from) in &seen.open {
            by_key
                .entry((d.clone(), c.clone()))
                .or_default()
                .push((*from, f64::INFINITY));
        }
        let mut out = Vec::new();
        for ((district, category), mut spans) in by_key {
            spans.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut merged: Vec<(f64, f64)> = Vec::new();
            for (from, to) in spans {
                match merged.last_mut() {
                    Some(last) if from <= last.1 => last.1 = last.1.max(to),
                    _ => merged.push((from, to)),
                }
            }
            for (from, to) in merged {
                out.push(AlertSpan {
                    district: district.clone(),
                    category: category.clone(),
                    raised_s: round(from),
                    cleared_s: (to.is_finite() && to <= end).then(|| round(to)),
                });
            }
        }
        out.sort_by(|a, b| {
            a.raised_s
                .total_cmp(&b.raised_s)
                .then_with(|| (&a.district, &a.category).cmp(&(&b.district, &b.category)))
        });
        out
    }
}

fn round(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}

async fn watch(node: usize, endpoint: String, seen: Arc<Mutex<Seen>>, start: Instant) {
    loop {
        if let Ok(mut client) = crate::engine::channel(&endpoint).map(AdminServiceClient::new)
            && let Ok(resp) = client.watch_alerts(pb::WatchAlertsRequest { follow: true }).await
        {
            let mut stream = resp.into_inner();
            while let Ok(Some(e)) = stream.message().await {
                let t = start.elapsed().as_secs_f64();
                let mut s = seen.lock();
                match pb::AlertKind::try_from(e.kind) {
                    Ok(pb::AlertKind::Started) | Ok(pb::AlertKind::Updated) => {
                        s.raise(node, &e.district, &e.category, t)
                    }
                    Ok(pb::AlertKind::Cleared) => s.clear(node, &e.district, &e.category, t),
                    _ => {}
                }
            }
            seen.lock().drop_node(node, start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_over_nodes_and_a_broken_stream_closes_its_own() {
        let mut s = Seen::default();
        s.raise(0, "110109", "flood", 21.0);
        s.raise(1, "110109", "flood", 22.0);
        s.drop_node(0, 40.0);
        s.clear(1, "110109", "flood", 75.0);
        s.raise(2, "110111", "all", 30.0);
        let w = AlertWatch {
            seen: Arc::new(Mutex::new(s)),
            tasks: Vec::new(),
            start: Instant::now() - Duration::from_secs(100),
        };
        let spans = w.finish();
        assert_eq!(
            spans,
            vec![
                AlertSpan {
                    district: "110109".into(),
                    category: "flood".into(),
                    raised_s: 21.0,
                    cleared_s: Some(75.0)
                },
                AlertSpan {
                    district: "110111".into(),
                    category: "all".into(),
                    raised_s: 30.0,
                    cleared_s: None
                },
            ]
        );
    }
}
