//! An Intake node: storage, Raft groups, and the gRPC door they sit behind.
//!
//! A complaint flows: [`intake_service`] validates it → [`router`] picks its
//! shard and either proposes it to the local leader or forwards it to the
//! leader's node → the state machine applies it and answers with the ticket.

pub mod admin_service;
pub mod arrival;
pub mod auth;
pub mod bad_frames;
pub mod batcher;
pub mod compaction;
pub mod config;
pub mod convert;
pub mod deadline;
pub mod dispatcher;
pub mod errors;
pub mod intake_service;
pub mod lag;
pub mod latency;
pub mod meta;
pub mod node;
pub mod observe;
pub mod router;
pub mod slowness;
pub mod streak;
pub mod tls;

pub use config::{AdmissionConfig, NodeConfig, RaftTuning};
pub use node::{Node, NodeError};

/// Metadata key counting the nodes a request was forwarded through, so a
/// stale view of leaders can never bounce a request around the cluster.
pub const HOPS_HEADER: &str = "x-intake-hops";
