//! Delivery of committed tickets to the downstream dispatch system.
//!
//! One task per data shard hosted on this node. While this node leads the
//! shard, the task reads committed tickets from the state machine, starting
//! at the replicated cursor, and delivers them in commit order, in batches,
//! one call in flight. For the prefix the downstream accepted it proposes
//! `AdvanceDispatch` through Raft before delivering more, so a new leader
//! reads the cursor the old one committed and resumes there. Tickets
//! delivered but not yet recorded are delivered again: at least once, and
//! the downstream deduplicates by ticket id. While the downstream is down
//! the task backs off with full jitter; tickets wait in the state machine,
//! so nothing is skipped and nothing is held in memory.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use intake_core::{Command, CommandResponse, DispatchCursor, DispatchState, META_GROUP, Ticket};
use intake_proto::dispatch::v1 as dpb;
use intake_proto::dispatch::v1::dispatch_service_client::DispatchServiceClient;
use intake_storage::{NodeId, Raft, ShardId, StateMachine};
use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::config::DispatchConfig;
use crate::convert::{now_millis, ticket_to_dispatch};
use crate::dispatch_board::DispatchBoard;
use crate::registry::Registry;

/// How often an idle or following task looks again. A caught-up leader also
/// wakes on every applied entry.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Lag of a shard as its replica here sees it: tickets not yet acknowledged
/// downstream, and the age in seconds of the oldest of them. A storage error
/// is logged and reported as no lag, since this only feeds status and
/// metrics; delivery itself reads the store again and stops on errors.
pub fn lag(sm: &StateMachine) -> (DispatchState, f64) {
    let state = match sm.dispatch_state() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(shard = sm.shard(), error = %e, "cannot read the dispatch state");
            return (DispatchState::default(), 0.0);
        }
    };
    if state.lag() == 0 {
        return (state, 0.0);
    }
    match sm.tickets_at(state.next, 1) {
        Ok(t) => (state, t.first().map_or(0.0, |t| age_seconds(t.accepted_at))),
        Err(e) => {
            tracing::warn!(shard = sm.shard(), error = %e, "cannot read the oldest waiting ticket");
            (state, 0.0)
        }
    }
}

/// Seconds since `accepted_at` (the leader's clock), never negative.
fn age_seconds(accepted_at: i64) -> f64 {
    (now_millis() - accepted_at).max(0) as f64 / 1000.0
}

/// Starts the supervisor: it gives every data shard hosted here a delivery
/// task, including shards added later. Returns at once.
pub fn spawn(
    node: NodeId,
    registry: Registry,
    cfg: DispatchConfig,
    board: DispatchBoard,
    stop: watch::Receiver<bool>,
) {
    let client = match &cfg.target {
        Some(target) => match Endpoint::from_shared(format!("http://{target}")) {
            Ok(e) => Some(DispatchServiceClient::new(
                e.connect_timeout(Duration::from_secs(1))
                    .tcp_nodelay(true)
                    .connect_lazy(),
            )),
            Err(e) => {
                tracing::error!(target = %target, error = %e, "bad --dispatch address; tickets will wait");
                None
            }
        },
        None => None,
    };
    tokio::spawn(supervise(node, registry, cfg, client, board, stop));
}

async fn supervise(
    node: NodeId,
    registry: Registry,
    cfg: DispatchConfig,
    client: Option<DispatchServiceClient<Channel>>,
    board: DispatchBoard,
    mut stop: watch::Receiver<bool>,
) {
    let running: Arc<Mutex<HashSet<ShardId>>> = Default::default();
    loop {
        for (shard, raft) in registry.groups().all() {
            if shard == META_GROUP {
                continue;
            }
            let Some(sm) = registry.state_machine(shard) else {
                continue;
            };
            let fresh = running.lock().insert(shard);
            if fresh {
                let task = ShardTask {
                    node,
                    shard,
                    groups: registry.groups().clone(),
                    raft,
                    sm,
                    client: client.clone(),
                    cfg: cfg.clone(),
                    board: board.clone(),
                };
                let (running, stop) = (running.clone(), stop.clone());
                tokio::spawn(async move {
                    task.run(stop).await;
                    running.lock().remove(&shard);
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

struct ShardTask {
    node: NodeId,
    shard: ShardId,
    /// The node's groups: the task ends once its replica has moved away.
    groups: intake_cluster::Groups,
    raft: Raft,
    sm: StateMachine,
    client: Option<DispatchServiceClient<Channel>>,
    cfg: DispatchConfig,
    board: DispatchBoard,
}

/// Why a leader's delivery run ended.
enum RunEnd {
    /// Stop requested.
    Stop,
    /// Leadership lost, or the cursor moved under us: start over.
    Again,
}

impl ShardTask {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let labels = [("shard", self.shard.to_string())];
        loop {
            if *stop.borrow() {
                return;
            }
            // Moved away (a replica move): the replica here is stopped and
            // wiped; a replica that returns later gets a task of its own.
            if self.groups.get(self.shard).is_none() {
                self.board.set_state(self.shard, "");
                return;
            }
            let (state, seconds) = lag(&self.sm);
            metrics::gauge!("intake_dispatch_lag_tickets", &labels).set(state.lag() as f64);
            metrics::gauge!("intake_dispatch_lag_seconds", &labels).set(seconds);
            if self.leads() {
                if let RunEnd::Stop = self.lead(&mut stop).await {
                    return;
                }
            } else {
                self.board.set_state(self.shard, "");
            }
            tokio::select! {
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    fn leads(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.node)
    }

    /// Delivers while this node leads the shard.
    async fn lead(&self, stop: &mut watch::Receiver<bool>) -> RunEnd {
        let Some(client) = self.client.clone() else {
            self.board
                .set_state(self.shard, "no downstream configured (tickets wait)");
            return RunEnd::Again;
        };
        // Everything committed before this term must be applied before the
        // cursor is read, or we would resume from a stale one.
        if let Err(e) = self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            tracing::debug!(shard = self.shard, error = %e, "dispatch waits for a settled leader");
            return RunEnd::Again;
        }
        let mut cursor = match self.sm.dispatch_state() {
            Ok(s) => s.next,
            Err(e) => {
                self.board.failed(self.shard, format!("reading the cursor: {e}"));
                return RunEnd::Again;
            }
        };
        tracing::info!(shard = self.shard, %cursor, "delivering to the downstream from the replicated cursor");
        let labels = [("shard", self.shard.to_string())];
        let mut backoff = self.cfg.backoff_min;
        let mut applied = self.raft.metrics();
        loop {
            if *stop.borrow() {
                return RunEnd::Stop;
            }
            if !self.leads() {
                return RunEnd::Again;
            }
            let tickets = match self.sm.tickets_at(cursor, self.cfg.batch.max(1)) {
                Ok(t) => t,
                Err(e) => {
                    self.board.failed(self.shard, format!("reading tickets: {e}"));
                    return RunEnd::Again;
                }
            };
            if tickets.is_empty() {
                self.board.set_state(self.shard, "caught up");
                metrics::gauge!("intake_dispatch_lag_tickets", &labels).set(0.0);
                metrics::gauge!("intake_dispatch_lag_seconds", &labels).set(0.0);
                tokio::select! {
                    _ = applied.changed() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.wait_for(|s| *s) => return RunEnd::Stop,
                }
                continue;
            }
            self.board.set_state(self.shard, "delivering");
            let accepted = match self.deliver(client.clone(), &tickets).await {
                Ok(n) => n,
                Err(why) => {
                    tracing::warn!(shard = self.shard, error = %why, "delivery failed; backing off");
                    metrics::counter!("intake_dispatch_failures_total", &labels).increment(1);
                    self.board.failed(self.shard, why);
                    0
                }
            };
            if accepted > 0 {
                let to = DispatchCursor::after(&tickets[accepted - 1].id);
                match self.advance(cursor, to, accepted as u64).await {
                    Some(state) => {
                        metrics::counter!("intake_dispatch_delivered_total", &labels)
                            .increment(accepted as u64);
                        metrics::gauge!("intake_dispatch_lag_tickets", &labels).set(state.lag() as f64);
                        if let Some(next) = tickets.get(accepted) {
                            metrics::gauge!("intake_dispatch_lag_seconds", &labels)
                                .set(age_seconds(next.accepted_at));
                        }
                        cursor = to;
                    }
                    None => return RunEnd::Again,
                }
            }
            if accepted == tickets.len() {
                backoff = self.cfg.backoff_min;
                continue;
            }
            // Some or all were refused: the oldest waiting ticket keeps
            // ageing while the downstream is away. The gauges are otherwise
            // set only on progress, so without this the leader, whose view
            // dashboards and alerts read, would report the last delivery's
            // lag (0) through a whole outage.
            let (state, seconds) = lag(&self.sm);
            metrics::gauge!("intake_dispatch_lag_tickets", &labels).set(state.lag() as f64);
            metrics::gauge!("intake_dispatch_lag_seconds", &labels).set(seconds);
            // Wait, then offer the rest again.
            let pause = rand::rng().random_range(Duration::ZERO..=backoff);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|s| *s) => return RunEnd::Stop,
            }
            backoff = (backoff * 2).min(self.cfg.backoff_max);
        }
    }

    /// One `Deliver` call: how many tickets, from the first, the downstream
    /// accepted. Acceptance counts only up to the first refusal, so order
    /// holds even if the downstream accepted some later ones.
    async fn deliver(
        &self,
        mut client: DispatchServiceClient<Channel>,
        tickets: &[Ticket],
    ) -> Result<usize, String> {
        let mut req = tonic::Request::new(dpb::DeliverRequest {
            shard: self.shard,
            tickets: tickets.iter().map(|t| self.with_incident(t)).collect(),
        });
        req.set_timeout(self.cfg.timeout);
        let resp = tokio::time::timeout(self.cfg.timeout, client.deliver(req))
            .await
            .map_err(|_| format!("no answer within {:?}", self.cfg.timeout))?
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        let mut n = 0;
        for (t, r) in tickets.iter().zip(resp.results.iter()) {
            if !r.accepted || r.ticket_id != t.id.to_string() {
                if n == 0 {
                    return Err(format!("downstream refused {}: {}", t.id, r.error));
                }
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// The downstream's form of a ticket, with its incident when it has one
    /// (read at delivery: a ticket's incident appears when a second
    /// complaint matches it, possibly after the ticket was delivered).
    fn with_incident(&self, t: &Ticket) -> dpb::DispatchedTicket {
        let mut d = ticket_to_dispatch(t);
        match self.sm.incident_of(&t.id) {
            Ok(Some(i)) => d.incident_id = i.to_string(),
            Ok(None) => {}
            Err(e) => tracing::warn!(shard = self.shard, error = %e, "cannot read a ticket's incident"),
        }
        d
    }

    /// Records delivery through Raft; `None` if this node no longer leads
    /// or the cursor is not where it thought.
    async fn advance(&self, from: DispatchCursor, to: DispatchCursor, count: u64) -> Option<DispatchState> {
        match self
            .raft
            .client_write(Command::AdvanceDispatch { from, to, count })
            .await
        {
            Ok(r) => match r.data {
                CommandResponse::DispatchAdvanced { moved: true, state } => Some(state),
                other => {
                    tracing::info!(
                        shard = self.shard,
                        ?other,
                        "dispatch cursor moved elsewhere; re-reading it"
                    );
                    None
                }
            },
            Err(e) => {
                tracing::info!(shard = self.shard, error = %e, "could not record delivery; re-reading the cursor");
                None
            }
        }
    }
}
