//! `AdminService.WatchAlerts`: the surges in progress, then every change,
//! from this node's [`SurgeWatch`]. A watcher too slow to keep up (1,024
//! events behind) is told so with `DATA_LOSS` and may reconnect: it gets the
//! surges in progress again.

use std::pin::Pin;

use futures::Stream;
use intake_core::{ActiveSurge, SurgeEvent, SurgeKind};
use intake_proto::pb;
use intake_storage::NodeId;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::convert::millis_to_timestamp;
use crate::surge_watch::SurgeWatch;

pub type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::AlertEvent, Status>> + Send>>;

pub fn kind_to_pb(kind: SurgeKind) -> pb::AlertKind {
    match kind {
        SurgeKind::Started => pb::AlertKind::Started,
        SurgeKind::Updated => pb::AlertKind::Updated,
        SurgeKind::Cleared => pb::AlertKind::Cleared,
    }
}

pub fn event_to_pb(e: &SurgeEvent, node: NodeId) -> pb::AlertEvent {
    pb::AlertEvent {
        kind: kind_to_pb(e.kind) as i32,
        district: e.district.clone(),
        category: e.category.clone(),
        rate: e.rate,
        baseline: e.baseline,
        since: Some(millis_to_timestamp(e.since)),
        at: Some(millis_to_timestamp(e.at)),
        in_progress: false,
        node_id: node,
    }
}

fn active_to_pb(a: &ActiveSurge, node: NodeId) -> pb::AlertEvent {
    pb::AlertEvent {
        kind: pb::AlertKind::Started as i32,
        district: a.district.clone(),
        category: a.category.clone(),
        rate: a.rate,
        baseline: a.baseline,
        since: Some(millis_to_timestamp(a.since)),
        at: Some(millis_to_timestamp(a.since)),
        in_progress: true,
        node_id: node,
    }
}

/// The stream one `WatchAlerts` call gets.
pub fn watch(surges: &SurgeWatch, node: NodeId, follow: bool) -> AlertStream {
    let (active, rx) = surges.subscribe();
    let first = futures::stream::iter(active.into_iter().map(move |a| Ok(active_to_pb(&a, node))));
    if !follow {
        return Box::pin(first);
    }
    let rest = futures::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(e) => Some((Ok(event_to_pb(&e, node)), Some(rx))),
            Err(RecvError::Lagged(n)) => Some((
                Err(Status::data_loss(format!(
                    "this watcher fell {n} alert events behind; reconnect for the surges in progress"
                ))),
                None,
            )),
            Err(RecvError::Closed) => None,
        }
    });
    Box::pin(futures::StreamExt::chain(first, rest))
}
