//! The receiving side of the Raft transport: finds the addressed group and
//! hands it the message.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use intake_core::{ClusterMap, META_GROUP};
use intake_proto::raft::v1::raft_transport_server::RaftTransport;
use intake_proto::raft::v1::{RaftMessage, SnapshotChunk};
use intake_storage::{NodeStorage, Raft, ShardId, SnapshotData, TypeConfig};
use openraft::Snapshot;
use openraft::alias::{SnapshotMetaOf, VoteOf};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::codec::{decode, encode};
use crate::groups::Groups;

/// Where the transport reads the node's newest cluster map from.
pub type MapSource = Arc<dyn Fn() -> Arc<ClusterMap> + Send + Sync>;

pub struct RaftTransportService {
    groups: Groups,
    storage: NodeStorage,
    map: MapSource,
    stop: watch::Receiver<bool>,
}

impl RaftTransportService {
    /// `stop` turning true ends every open replication stream, so the
    /// server's graceful shutdown does not wait on streams a leader would
    /// otherwise keep open forever.
    pub fn new(groups: Groups, storage: NodeStorage, map: MapSource, stop: watch::Receiver<bool>) -> Self {
        Self {
            groups,
            storage,
            map,
            stop,
        }
    }

    fn group(&self, id: ShardId) -> Result<Raft, Status> {
        // Not UNAVAILABLE: the peer would treat it as a network fault. A group
        // that is not (yet) here is a placement question, not a transport one.
        self.groups
            .get(id)
            .ok_or_else(|| Status::not_found(format!("raft group {id} is not hosted on this node")))
    }
}

fn reply<T: serde::Serialize>(group: ShardId, value: &T) -> Result<Response<RaftMessage>, Status> {
    let payload = encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { group, payload }))
}

fn bad(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn raft_err(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<RaftMessage, Status>> + Send>>;

impl RaftTransportService {
    /// Decode, hand to the addressed group, encode the answer: every unary
    /// Raft RPC is this with a different openraft call.
    async fn unary<Req, Resp, E, F, Fut>(
        &self,
        request: Request<RaftMessage>,
        call: F,
    ) -> Result<Response<RaftMessage>, Status>
    where
        Req: serde::de::DeserializeOwned,
        Resp: serde::Serialize,
        E: std::fmt::Display,
        F: FnOnce(Raft, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, E>>,
    {
        let msg = request.into_inner();
        let raft = self.group(msg.group)?;
        let resp = call(raft, decode(&msg.payload).map_err(bad)?)
            .await
            .map_err(raft_err)?;
        reply(msg.group, &resp)
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.unary(request, |raft, req| async move { raft.vote(req).await })
            .await
    }

    async fn pre_vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.unary(request, |raft, req| async move { raft.pre_vote(req).await })
            .await
    }

    async fn transfer_leader(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.unary(request, |raft, req| async move {
            raft.handle_transfer_leader(req).await
        })
        .await
    }

    async fn propose(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        let command = crate::propose::accept(msg.group, &msg.payload).map_err(bad)?;
        let raft = self.group(msg.group)?;
        let answer = crate::propose::on_replica(&raft, command).await;
        reply(msg.group, &answer)
    }

    async fn change_replicas(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        let op: crate::replicas::ReplicaOp = decode(&msg.payload).map_err(bad)?;
        let raft = self.group(msg.group)?;
        let answer = crate::replicas::on_replica(&raft, op).await;
        reply(msg.group, &answer)
    }

    async fn fetch_map(&self, _request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let map = (self.map)();
        reply(META_GROUP, map.as_ref())
    }

    async fn append_entries(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.unary(request, |raft, req| async move { raft.append_entries(req).await })
            .await
    }

    type StreamAppendStream = ResponseStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let mut input = request.into_inner();
        let Some(first) = input.message().await? else {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        };
        let group = first.group;
        let raft = self.group(group)?;
        // A message that does not decode, or belongs to another group, ends
        // the stream; the leader then starts a new one.
        let all = futures::stream::iter([Ok(first)]).chain(input);
        let requests = tokio_stream::StreamExt::map_while(all, move |m| {
            let m = m.ok()?;
            if m.group != group {
                return None;
            }
            decode::<AppendEntriesRequest<TypeConfig>>(&m.payload).ok()
        });
        let results = raft.stream_append(requests).map(move |r| match r {
            Ok(result) => {
                let result: StreamAppendResult<TypeConfig> = result;
                encode(&result)
                    .map(|payload| RaftMessage { group, payload })
                    .map_err(|e| Status::internal(e.to_string()))
            }
            Err(fatal) => Err(Status::internal(fatal.to_string())),
        });
        let mut stop = self.stop.clone();
        let results = results.take_until(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        Ok(Response::new(Box::pin(results)))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let group = first.group;
        let raft = self.group(group)?;
        let (vote, meta, total): (VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>, u64) =
            decode(&first.meta).map_err(bad)?;
        let mut writer = self
            .storage
            .snapshot_writer(group)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut received: u64 = 0;
        while let Some(chunk) = input.message().await? {
            received += chunk.data.len() as u64;
            if received > total {
                return Err(Status::invalid_argument("snapshot body longer than announced"));
            }
            writer
                .write(&chunk.data)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        if received != total {
            return Err(Status::invalid_argument(format!(
                "snapshot body cut short: {received} of {total} bytes"
            )));
        }
        let data: SnapshotData = writer
            .finish()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let resp = raft
            .install_full_snapshot(vote, Snapshot { meta, snapshot: data })
            .await
            .map_err(raft_err)?;
        reply(group, &resp)
    }
}
