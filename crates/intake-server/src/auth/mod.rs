//! Who may call what: bearer tokens with roles (`--auth FILE`), and the
//! gate in front of every service that turns each refusal into a gRPC
//! status, in one place ([`gate`]).
//!
//! - An **adapter** token submits complaints of its channels only (Submit,
//!   SubmitBatch) and reads tickets of those channels.
//! - A **downstream** token reports status (UpdateStatus) and reads tickets.
//! - An **ops** token reads tickets and makes admin calls.
//! - Every token may read the cluster map (`ClusterStatus`): clients route
//!   by it, and it holds no complaint data.
//!
//! Calls between nodes need no token: with mutual TLS, a connection whose
//! certificate the cluster CA signed is a peer and its forwarded requests
//! carry the entry node's decision. Without mutual TLS the entry node sends
//! the caller's token along with the forward ([`forward`]) and every node
//! checks it again, so the hop header alone opens nothing.
//!
//! The HTTP door calls the service in-process through [`InProcess`], which
//! asks the same gate with the `authorization` header the door passes on.

mod forward;
mod gate;
mod guard;
mod in_process;
mod limit;
mod table;

pub use forward::{attach_caller_token, caller_token};
pub use gate::{Caller, GateLayer};
pub use guard::Guarded;
pub use in_process::InProcess;
pub use table::{AuthError, AuthTable, Principal, Role, hash_token};
