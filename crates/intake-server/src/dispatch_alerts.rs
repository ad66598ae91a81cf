//! Surge alerts to the downstream: the optional `DispatchService.Alert`.
//!
//! One task per node, beside (never inside) ticket delivery, so a downstream
//! that is slow with alerts or lacks the call cannot hold a ticket back. An
//! event goes out from the node leading the shard of its district; a node
//! that becomes a shard's leader sends that shard's surges in progress again
//! as `started` (alerts are at least once). A downstream answering
//! UNIMPLEMENTED (built before the call existed) is not asked again until
//! this node restarts; other failures are retried briefly, then the event
//! is dropped and counted: an alert is news, and the next one supersedes it.

use std::collections::HashSet;
use std::time::Duration;

use intake_core::{ActiveSurge, SurgeEvent, SurgeKind};
use intake_proto::dispatch::v1 as dpb;
use intake_proto::dispatch::v1::dispatch_service_client::DispatchServiceClient;
use intake_storage::{NodeId, ShardId};
use openraft::async_runtime::WatchReceiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::convert::millis_to_timestamp;
use crate::registry::Registry;
use crate::surge_watch::SurgeWatch;

const ATTEMPTS: u32 = 3;

fn to_pb(e: &SurgeEvent) -> dpb::SurgeAlert {
    dpb::SurgeAlert {
        kind: e.kind.as_str().to_string(),
        district: e.district.clone(),
        category: e.category.clone(),
        rate: e.rate,
        baseline: e.baseline,
        since: Some(millis_to_timestamp(e.since)),
        at: Some(millis_to_timestamp(e.at)),
    }
}

fn restarted(a: &ActiveSurge, now: i64) -> SurgeEvent {
    SurgeEvent {
        kind: SurgeKind::Started,
        district: a.district.clone(),
        category: a.category.clone(),
        rate: a.rate,
        baseline: a.baseline,
        since: a.since,
        at: now,
    }
}

struct Sender {
    node: NodeId,
    registry: Registry,
    client: DispatchServiceClient<Channel>,
    timeout: Duration,
    /// Set once the downstream said UNIMPLEMENTED.
    unsupported: bool,
}

impl Sender {
    fn shard_led(&self, district: &str) -> Option<ShardId> {
        let shard = self.registry.map().shard_for(district, 0)?;
        let raft = self.registry.raft(shard)?;
        (raft.metrics().borrow_watched().current_leader == Some(self.node)).then_some(shard)
    }

    fn led_shards(&self) -> HashSet<ShardId> {
        self.registry
            .groups()
            .all()
            .into_iter()
            .filter(|(_, raft)| raft.metrics().borrow_watched().current_leader == Some(self.node))
            .map(|(shard, _)| shard)
            .collect()
    }

    async fn send(&mut self, shard: ShardId, events: &[SurgeEvent]) {
        if self.unsupported || events.is_empty() {
            return;
        }
        let request = dpb::AlertRequest {
            shard,
            alerts: events.iter().map(to_pb).collect(),
        };
        for attempt in 0..ATTEMPTS {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(self.timeout);
            let outcome = match tokio::time::timeout(self.timeout, self.client.alert(req)).await {
                Ok(Ok(_)) => "delivered",
                Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                    tracing::info!(
                        "the downstream has no DispatchService.Alert; surge alerts stay in Intake"
                    );
                    self.unsupported = true;
                    "unimplemented"
                }
                Ok(Err(s)) => {
                    tracing::debug!(shard, code = ?s.code(), attempt, "alert not delivered");
                    "failed"
                }
                Err(_) => "failed",
            };
            metrics::counter!("intake_dispatch_alerts_total", "outcome" => outcome)
                .increment(events.len() as u64);
            if outcome != "failed" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
    }
}

/// Sends this node's surge events to `target` until `stop`.
pub async fn run(
    node: NodeId,
    registry: Registry,
    surges: SurgeWatch,
    target: String,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let endpoint = match Endpoint::from_shared(format!("http://{target}")) {
        Ok(e) => e.connect_timeout(Duration::from_secs(1)).connect_lazy(),
        Err(e) => {
            tracing::error!(target = %target, error = %e, "bad --dispatch address; no surge alerts sent");
            return;
        }
    };
    let mut sender = Sender {
        node,
        registry,
        client: DispatchServiceClient::new(endpoint),
        timeout,
        unsupported: false,
    };
    // Counters start at zero, so `increase()` sees the first event.
    for outcome in ["delivered", "unimplemented", "failed"] {
        metrics::counter!("intake_dispatch_alerts_total", "outcome" => outcome).increment(0);
    }
    let (_, mut rx) = surges.subscribe();
    let mut led = HashSet::new();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        let next = tokio::select! {
            r = rx.recv() => Next::Event(r),
            _ = every.tick() => Next::Tick,
            _ = stop.wait_for(|s| *s) => Next::Stop,
        };
        match next {
            Next::Event(Ok(e)) => {
                if let Some(shard) = sender.shard_led(&e.district) {
                    sender.send(shard, &[e]).await;
                }
            }
            Next::Event(Err(RecvError::Lagged(n))) => {
                metrics::counter!("intake_dispatch_alerts_total", "outcome" => "failed").increment(n);
            }
            Next::Event(Err(RecvError::Closed)) | Next::Stop => return,
            Next::Tick => {
                // Shards this node has just come to lead: their surges again.
                let now_led = sender.led_shards();
                let now = crate::convert::now_millis();
                for shard in now_led.difference(&led) {
                    let districts = sender.registry.map().districts_of(*shard);
                    let events: Vec<SurgeEvent> = surges
                        .active()
                        .iter()
                        .filter(|a| districts.contains(&a.district))
                        .map(|a| restarted(a, now))
                        .collect();
                    sender.send(*shard, &events).await;
                }
                led = now_led;
            }
        }
    }
}

/// What woke the loop (decided before any await, so no watch guard is held).
enum Next {
    Event(Result<SurgeEvent, RecvError>),
    Tick,
    Stop,
}
