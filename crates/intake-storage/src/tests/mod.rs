//! Tests on real sled databases in temp dirs; no mocks. They live inside the
//! crate so they can stop an install halfway to simulate a crash.

mod dispatch_state;
mod durability;
mod fixtures;
mod idempotency;
mod incidents;
mod key_window;
mod migration;
mod openraft_suite;
mod pure_apply;
mod snapshots;
