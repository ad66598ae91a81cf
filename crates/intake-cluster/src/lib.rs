//! Raft wiring for Intake: how the Raft groups of one node talk to their peers.
//!
//! * [`PeerPool`] keeps one long-lived tonic channel (one HTTP/2 connection)
//!   per peer node; every Raft group on the node shares it.
//! * [`GroupNetworkFactory`] is openraft's network for one group: it tags each
//!   message with the group id and sends it over the shared channel.
//! * [`RaftTransportService`] is the receiving side: it finds the group's
//!   local Raft and hands it the message.
//! * [`Groups`] is the node's registry of local Raft groups.

mod codec;
#[cfg(test)]
mod codec_fuzz;
mod groups;
mod network;
mod peers;
pub mod propose;
pub mod replicas;
mod transport;

pub use codec::CodecError;
pub use groups::Groups;
pub use network::{GroupConnection, GroupNetworkFactory};
pub use peers::PeerPool;
pub use transport::{MapSource, RaftTransportService};

/// Bytes of snapshot data per gRPC message.
pub const SNAPSHOT_CHUNK_BYTES: usize = 512 * 1024;
