//! Two channels per peer: one for Raft, reused by every group, and one for
//! everything else (forwarded client requests, status queries).
//!
//! Apart, because a surge of forwarded requests must not delay Raft: on a
//! shared connection forwards fill the channel's buffer, the HTTP/2 flow
//! control window and the peer's per-connection call limit, and heartbeats
//! and appends wait behind them or are shed, which slows every commit.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use intake_proto::raft::v1::raft_transport_client::RaftTransportClient;
use intake_storage::NodeId;
use parking_lot::RwLock;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Tonic channels multiplex concurrent RPCs over one HTTP/2 connection and
/// reconnect by themselves, so a channel is made once per peer address and
/// cloned (cheaply) for each call.
#[derive(Clone, Default)]
pub struct PeerPool {
    channels: Arc<DashMap<NodeId, (String, Channel)>>,
    forwards: Arc<DashMap<NodeId, (String, Channel)>>,
    /// The client side of mutual TLS between nodes, when it is on.
    tls: Arc<RwLock<Option<ClientTlsConfig>>>,
}

impl PeerPool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects to peers with `tls` from now on (`None`: plaintext). Open
    /// channels are dropped, so the next call dials with the new
    /// certificate; calls in flight finish on the old connection.
    pub fn set_tls(&self, tls: Option<ClientTlsConfig>) {
        *self.tls.write() = tls;
        self.channels.clear();
        self.forwards.clear();
    }

    /// The Raft transport client for `target` at `addr`.
    pub fn client(
        &self,
        target: NodeId,
        addr: &str,
    ) -> Result<RaftTransportClient<Channel>, tonic::transport::Error> {
        Ok(Self::wrap(self.channel(target, addr)?))
    }

    /// The Raft channel to `target` at `addr`. A changed address replaces
    /// the channel.
    pub fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        self.get_or_make(&self.channels, target, addr)
    }

    /// The channel for forwarded client requests and status queries to
    /// `target` at `addr`, apart from Raft's.
    pub fn forward_channel(&self, target: NodeId, addr: &str) -> Result<Channel, tonic::transport::Error> {
        self.get_or_make(&self.forwards, target, addr)
    }

    /// A Raft transport client on the forward channel to `target`: for the
    /// calls that serve client requests (key claims), which must not queue
    /// behind replication, nor delay heartbeats in a surge.
    pub fn forward_client(
        &self,
        target: NodeId,
        addr: &str,
    ) -> Result<RaftTransportClient<Channel>, tonic::transport::Error> {
        Ok(Self::wrap(self.forward_channel(target, addr)?))
    }

    fn get_or_make(
        &self,
        channels: &DashMap<NodeId, (String, Channel)>,
        target: NodeId,
        addr: &str,
    ) -> Result<Channel, tonic::transport::Error> {
        if let Some(entry) = channels.get(&target)
            && entry.0 == addr
        {
            return Ok(entry.1.clone());
        }
        let tls = self.tls.read().clone();
        let endpoint = match tls {
            Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?,
            None => Endpoint::from_shared(format!("http://{addr}"))?,
        };
        let channel = endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .initial_connection_window_size(8 * 1024 * 1024)
            .initial_stream_window_size(4 * 1024 * 1024)
            .connect_lazy();
        channels.insert(target, (addr.to_string(), channel.clone()));
        Ok(channel)
    }

    fn wrap(channel: Channel) -> RaftTransportClient<Channel> {
        RaftTransportClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}
