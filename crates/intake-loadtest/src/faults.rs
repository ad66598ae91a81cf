//! Carries out a scenario's faults at their times against a [`LocalCluster`]
//! and records a mark per fault for the report.
//!
//! Faults run one after another in one task: a long one (a rolling restart)
//! delays those after it, and its mark says by how much.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::cluster::LocalCluster;
use crate::error::LoadError;
use crate::scenario::{Fault, FaultAction, NodeRef};

/// How long a fault waits for leaders (to find one to kill, or after a
/// restart) before it is marked failed.
const LEADER_WAIT: Duration = Duration::from_secs(30);

/// How long a removal may take to drain the node.
const REMOVE_WAIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Serialize)]
pub struct FaultMark {
    /// When the scenario planned it, seconds from the start.
    pub planned_s: f64,
    /// When it began.
    pub at_s: f64,
    /// When it was done (a rolling restart takes a while).
    pub done_s: f64,
    /// When its effect ended, for faults that last (a stalled sink, a
    /// rolling restart); drawn as a second line on the chart.
    pub until_s: Option<f64>,
    pub action: String,
    /// What was done, or why it could not be.
    pub detail: String,
    pub ok: bool,
}

/// Runs `faults` (sorted by time) from `start`; returns their marks.
pub async fn run(faults: Vec<Fault>, cluster: Arc<Mutex<LocalCluster>>, start: Instant) -> Vec<FaultMark> {
    let mut marks = Vec::new();
    for f in faults {
        tokio::time::sleep_until((start + Duration::from_secs_f64(f.at_s)).into()).await;
        let at_s = start.elapsed().as_secs_f64();
        let result = apply(&f.action, &cluster, start).await;
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        let done_s = start.elapsed().as_secs_f64();
        let until_s = match f.action {
            FaultAction::StallSink { for_s } if ok => Some(at_s + for_s),
            _ if ok && done_s - at_s > 1.0 => Some(done_s),
            _ => None,
        };
        marks.push(FaultMark {
            planned_s: f.at_s,
            at_s,
            done_s,
            until_s,
            action: f.action.name().to_string(),
            detail,
            ok,
        });
    }
    marks
}

async fn apply(
    action: &FaultAction,
    cluster: &Arc<Mutex<LocalCluster>>,
    start: Instant,
) -> Result<String, LoadError> {
    match action {
        FaultAction::KillLeader { district } => {
            let mut c = cluster.lock().await;
            let leader = c.leader_of(district, LEADER_WAIT).await?;
            c.kill(leader)?;
            Ok(format!(
                "kill -9 node {leader} (leader of the shard of {district})"
            ))
        }
        FaultAction::RestartNode { node } => {
            let mut c = cluster.lock().await;
            let id = match node {
                NodeRef::Id(id) => *id,
                NodeRef::Killed => c
                    .last_killed()
                    .ok_or_else(|| LoadError::Invalid("no killed node to restart".into()))?,
            };
            c.start(id)?;
            Ok(format!("node {id} restarted"))
        }
        FaultAction::CutNode { node } => {
            cluster.lock().await.freeze(*node)?;
            Ok(format!("node {node} frozen (SIGSTOP)"))
        }
        FaultAction::HealNode { node } => {
            cluster.lock().await.thaw(*node)?;
            Ok(format!("node {node} resumed (SIGCONT)"))
        }
        FaultAction::StopSink => {
            cluster.lock().await.stop_sink()?;
            Ok("sink killed".into())
        }
        FaultAction::StartSink => {
            cluster.lock().await.start_sink()?;
            Ok("sink started".into())
        }
        FaultAction::StallSink { for_s } => {
            cluster.lock().await.freeze_sink()?;
            // The resume runs on its own so later faults keep their times.
            let (c, for_s) = (cluster.clone(), *for_s);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs_f64(for_s)).await;
                let _ = c.lock().await.thaw_sink();
            });
            Ok(format!("sink frozen (SIGSTOP) for {for_s} s"))
        }
        FaultAction::AddNode { node } => {
            let mut c = cluster.lock().await;
            let through: Vec<u64> = c.running_nodes().into_iter().take(2).collect();
            c.join(*node, &through)?;
            c.wait_answering(*node, LEADER_WAIT).await?;
            Ok(format!("node {node} joined through {through:?}"))
        }
        FaultAction::RemoveNode { node } => {
            // The lock is not held while the node drains: later faults and
            // the report may need the cluster meanwhile.
            let endpoints: Vec<String> = {
                let c = cluster.lock().await;
                c.running_nodes()
                    .into_iter()
                    .filter(|id| id != node)
                    .filter_map(|id| c.addrs().get(&id).cloned())
                    .collect()
            };
            crate::cluster::remove_node(&endpoints, *node, REMOVE_WAIT).await?;
            let end = Instant::now() + LEADER_WAIT;
            // Bounded by LEADER_WAIT: the removed process exits by itself.
            let status = loop {
                if let Some(status) = cluster.lock().await.exited(*node)? {
                    break status;
                }
                if Instant::now() > end {
                    return Err(LoadError::Invalid(format!(
                        "node {node} was removed but its process did not exit"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            cluster.lock().await.forget(*node);
            if !status.success() {
                return Err(LoadError::Invalid(format!(
                    "node {node} was removed but exited with {status}"
                )));
            }
            Ok(format!("node {node} drained, removed, exited"))
        }
        FaultAction::RollingRestart { interval_s } => {
            let ids = cluster.lock().await.node_ids();
            let mut done = Vec::new();
            for id in ids {
                {
                    let mut c = cluster.lock().await;
                    // A node a fault already killed is simply started.
                    let _ = c.kill(id);
                    // Leaders among the others first: right after a kill,
                    // views still name the dead node, and a restart at once
                    // would make that stale view look healthy.
                    c.wait_leaders(LEADER_WAIT).await?;
                    c.start(id)?;
                    c.wait_answering(id, LEADER_WAIT).await?;
                }
                done.push(format!("{id}@{:.1}s", start.elapsed().as_secs_f64()));
                tokio::time::sleep(Duration::from_secs_f64(*interval_s)).await;
            }
            Ok(format!(
                "restarted nodes {} (kill -9, leaders elsewhere, start, answering)",
                done.join(", ")
            ))
        }
    }
}
