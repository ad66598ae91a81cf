//! Generated code for Intake's protobuf packages.
//!
//! `intake.v1` is the public API; `intake_internal.raft.v1` is the node-to-node
//! Raft transport and is not a stable interface. `dispatch.v1` is the contract
//! the downstream dispatch system implements and Intake calls.

#![allow(clippy::all, clippy::pedantic)]

pub mod codec;
pub mod wire;

pub mod intake {
    pub mod v1 {
        tonic::include_proto!("intake.v1");

        /// Encoded `FileDescriptorSet` of the public API, for gRPC server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("intake_v1_descriptor");
    }
}

pub mod dispatch {
    pub mod v1 {
        tonic::include_proto!("dispatch.v1");
    }
}

pub mod raft {
    pub mod v1 {
        tonic::include_proto!("intake_internal.raft.v1");
    }
}

pub use intake::v1 as pb;
pub use prost_types::Timestamp;
