//! The Rust client for Intake's channel adapters (call centre, citizen app,
//! web form).
//!
//! Two layers:
//!
//! - [`Client`]: `submit` one complaint and get one answer — a [`Submitted`]
//!   ticket or a definite [`ClientError`]. It sends to the node leading the
//!   complaint's shard when its cached shard map knows it (any node would
//!   forward, at the cost of a hop), retries with exponential backoff and
//!   full jitter that never undercuts the server's `RetryInfo`, and always
//!   with the **same idempotency key**, so the cluster makes at most one
//!   ticket per complaint however many attempts reach it. A retry budget
//!   shared by all calls (a token bucket, as gRPC retry throttling) stops
//!   retries once most recent attempts failed, so a surge is not amplified.
//! - [`Outbox`]: a durable queue on the adapter's disk. `enqueue` returns once
//!   the complaint and its key are fsync'd locally; a background task drains
//!   it to the cluster, retrying for as long as it takes, and after a crash
//!   and restart it drains whatever was left. Each complaint yields exactly
//!   one ticket.
//!
//! # Errors
//!
//! - [`ClientError::Rejected`]: the cluster refused the complaint (invalid
//!   input with field violations, the key reused for other content). It was
//!   not accepted and will not be; fix it or drop it.
//! - [`ClientError::Overloaded`]: every attempt was turned away at capacity
//!   and the budget or the call timeout ran out. It was not accepted; try
//!   again after `retry_after` (or use the outbox, which does so for you).
//! - [`ClientError::Unreachable`]: no connection to any node could be opened
//!   before the budget or the call timeout ran out. It was not accepted.
//! - [`ClientError::Unknown`]: the call ended after an attempt whose outcome
//!   is unknown (timeout, lost connection). It may have been accepted.
//!   Resubmit with the same key — the cluster returns the same ticket if it
//!   was.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use intake_client::{Client, ClientConfig, Outbox, OutboxConfig, pb};
//!
//! let client = Client::connect(ClientConfig::new(["10.0.0.1:7001", "10.0.0.2:7001"])).await?;
//! let complaint = pb::Complaint {
//!     channel: "phone".into(),
//!     district_code: "110105".into(),
//!     category: "noise".into(),
//!     text: "Loud music at 2am".into(),
//!     ..Default::default()
//! };
//!
//! // Directly: one call, one answer.
//! let ticket = client.submit(complaint.clone()).await?;
//! println!("{} {}", ticket.idempotency_key, ticket.ticket_id);
//!
//! // Or through the outbox: durable at once, ticketed when the cluster can.
//! let outbox = Outbox::open("/var/lib/adapter/outbox", client, OutboxConfig::default()).await?;
//! let mut events = outbox.subscribe();
//! let key = outbox.enqueue(complaint).await?;
//! while let Ok(event) = events.recv().await {
//!     println!("{event:?}");
//! }
//! # let _ = key;
//! # Ok(())
//! # }
//! ```
//!
//! A runnable adapter is in `examples/adapter.rs`.

mod client;
mod config;
mod error;
mod outbox;
mod redact;
mod retry;
mod retry_loop;
mod rotation;
mod routing;
mod security;
mod throttle;

pub use client::{Client, MAX_BATCH_ITEMS, Submitted};
pub use config::ClientConfig;
pub use error::{ClientError, FieldViolation};
pub use intake_proto::pb;
pub use outbox::{MAX_RECORD_BYTES, Outbox, OutboxConfig, OutboxError, OutboxEvent};
pub use redact::key_tag;
pub use retry::{RetryBudget, RetryBudgetConfig, backoff, backoff_ceiling};
pub use retry_loop::{Attempts, Backoff, RetryPolicy, Round, RoundEnd, Stop, Verdict};
pub use rotation::{HealthProbe, Probe, Rotation, RotationConfig, never_sent, nothing_heard};
pub use security::{Authorize, Security};
pub use throttle::{Answer as ThrottleAnswer, Throttle, ThrottleConfig};

/// A fresh idempotency key for a complaint of `district`: a UUID behind the
/// district (`{district}:{uuid}`, [`intake_core::district_key`]). A key is
/// unique in the whole cluster and its home shard decides who holds it; a
/// key that names its district is at home on the complaint's own shard, so
/// the complaint costs one Raft write instead of two.
pub fn mint_key(district: &str) -> String {
    intake_core::district_key(district, &uuid::Uuid::new_v4().to_string())
}
