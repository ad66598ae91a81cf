//! Openraft's network for one group, over the node's shared peer channels.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use intake_proto::raft::v1::raft_transport_client::RaftTransportClient;
use intake_proto::raft::v1::{RaftMessage, SnapshotChunk};
use intake_storage::{NodeId, ShardId, SnapshotData, TypeConfig};
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tonic::Code;
use tonic::transport::Channel;

use crate::SNAPSHOT_CHUNK_BYTES;
use crate::codec::{decode, encode};
use crate::peers::PeerPool;

type RpcErr = RPCError<TypeConfig>;

/// Wakes the waiter when dropped; `notify_one` keeps the wake-up even if
/// nobody waits yet.
struct NotifyOnDrop(Arc<Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// Creates connections for one Raft group. Cheap: connections are the
/// pool's, shared with every other group on this node.
#[derive(Clone)]
pub struct GroupNetworkFactory {
    group: ShardId,
    pool: PeerPool,
}

impl GroupNetworkFactory {
    pub fn new(group: ShardId, pool: PeerPool) -> Self {
        Self { group, pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        GroupConnection {
            group: self.group,
            target,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// The view of one peer from one group.
pub struct GroupConnection {
    group: ShardId,
    target: NodeId,
    addr: String,
    pool: PeerPool,
}

/// A peer that cannot be reached is `Unreachable` (openraft backs off);
/// anything else is a `Network` error (openraft retries soon).
fn status_err(s: tonic::Status) -> RpcErr {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&s))
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

fn net_err(e: &(impl std::error::Error + 'static)) -> RpcErr {
    RPCError::Network(NetworkError::new(e))
}

impl GroupConnection {
    fn client(&self) -> Result<RaftTransportClient<Channel>, RpcErr> {
        self.pool
            .client(self.target, &self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    /// Encode, send with openraft's deadline, decode: every unary Raft RPC is
    /// this with a different client method.
    async fn unary<Req, Resp, F, Fut>(&self, rpc: &Req, option: RPCOption, call: F) -> Result<Resp, RpcErr>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftTransportClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let req = self.message(rpc, option.hard_ttl())?;
        let reply = call(self.client()?, req).await.map_err(status_err)?;
        decode(&reply.into_inner().payload).map_err(|e| net_err(&e))
    }

    fn message<T: serde::Serialize>(
        &self,
        value: &T,
        ttl: Duration,
    ) -> Result<tonic::Request<RaftMessage>, RpcErr> {
        let payload = encode(value).map_err(|e| net_err(&e))?;
        let mut req = tonic::Request::new(RaftMessage {
            group: self.group,
            payload,
        });
        req.set_timeout(ttl);
        Ok(req)
    }
}

impl RaftNetworkV2<TypeConfig> for GroupConnection {
    type SnapshotData = SnapshotData;

    /// After `Unreachable`, wait 50 ms doubling to 1 s between tries, so a
    /// dead peer costs a few calls a second rather than a busy loop.
    fn backoff(&self) -> Option<Backoff> {
        let steps = std::iter::successors(Some(Duration::from_millis(50)), |d| {
            Some((*d * 2).min(Duration::from_secs(1)))
        });
        Some(Backoff::new(steps))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcErr> {
        self.unary(&rpc, option, |mut c, r| async move { c.append_entries(r).await })
            .await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RpcErr>>, RpcErr>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let group = self.group;
        Box::pin(async move {
            // openraft waits out its backoff inside the input stream, so pull
            // the first request before connecting: otherwise a dead peer's
            // connection error returns before the backoff is ever awaited and
            // replication retries in a busy loop.
            let mut input = input;
            let Some(first) = input.next().await else {
                return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
            };
            let mut client = self.client()?;
            // An entry that cannot be encoded ends the stream; openraft sees
            // the stream end and retries the replication.
            let all = futures::stream::iter([first]).chain(input);
            // When openraft drops the response stream (the session is over),
            // end the request stream too, so the HTTP/2 stream closes and the
            // peer's server can shut down gracefully instead of waiting on it.
            let session_over = Arc::new(Notify::new());
            let guard = NotifyOnDrop(session_over.clone());
            let outbound = tokio_stream::StreamExt::map_while(all, move |req| {
                encode(&req).ok().map(|payload| RaftMessage { group, payload })
            })
            .take_until(async move { session_over.notified().await });
            let response = client.stream_append(outbound).await.map_err(status_err)?;
            let results = response.into_inner().map(move |item| {
                let _session = &guard;
                let msg = item.map_err(status_err)?;
                decode::<StreamAppendResult<TypeConfig>>(&msg.payload).map_err(|e| net_err(&e))
            });
            Ok(Box::pin(results) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcErr> {
        self.unary(&rpc, option, |mut c, r| async move { c.vote(r).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcErr> {
        self.unary(&rpc, option, |mut c, r| async move { c.pre_vote(r).await })
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcErr> {
        self.unary(&req, option, |mut c, r| async move { c.transfer_leader(r).await })
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let group = self.group;
        let file = snapshot.snapshot;
        let total = file.metadata().await.map_err(|e| NetworkError::new(&e))?.len();
        // The length travels with the meta so the receiver can tell a
        // complete body from one cut short by a read error here.
        let meta = encode(&(vote, snapshot.meta, total)).map_err(|e| NetworkError::new(&e))?;
        let first = SnapshotChunk {
            group,
            meta,
            data: Vec::new(),
        };
        let data = futures::stream::unfold(file, move |mut f| async move {
            let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
            match f.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        SnapshotChunk {
                            group,
                            meta: Vec::new(),
                            data: buf,
                        },
                        f,
                    ))
                }
            }
        });
        let outbound = futures::stream::iter([first]).chain(data);
        let mut client = self.client().map_err(|e| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            other => StreamingError::Network(NetworkError::new(&other)),
        })?;
        let call = client.install_snapshot(outbound);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = call => {
                let reply = reply.map_err(|s| match status_err(s) {
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    other => StreamingError::Network(NetworkError::new(&other)),
                })?;
                decode(&reply.into_inner().payload).map_err(|e| StreamingError::Network(NetworkError::new(&e)))
            }
        }
    }
}
