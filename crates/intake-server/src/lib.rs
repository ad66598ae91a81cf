//! An Intake node: storage, Raft groups, and the gRPC door they sit behind.
//!
//! A complaint flows: [`intake_service`] validates it and asks [`admission`]
//! whether to take it → [`router`] picks its shard (the [`registry`] knows
//! which are here) and either proposes it through the local leader's
//! [`batcher`] or forwards it to the leader's node → the state machine
//! applies it and answers with the ticket. Errors on the way are
//! [`RequestError`]s, turned into gRPC statuses at the door.

pub mod admin_service;
pub mod admission;
pub mod alert_stream;
pub mod arrival;
pub mod auth;
pub mod bad_frames;
pub mod batcher;
pub mod compaction;
pub mod config;
pub mod convert;
pub mod deadline;
pub mod dispatch_alerts;
pub mod dispatch_board;
pub mod dispatcher;
pub mod error;
pub mod forwarder;
pub mod hosting;
pub mod intake_service;
pub mod join;
mod key_claims;
pub mod limits;
pub mod meta;
pub mod node;
pub mod observe;
pub mod ops;
pub mod registry;
pub mod router;
pub mod scheduler;
pub mod surge_watch;
pub mod tls;

pub use config::{AdmissionConfig, NodeConfig, RaftTuning};
pub use error::RequestError;
pub use intake_proto::wire::HOPS_HEADER;
pub use node::{Node, NodeError};
