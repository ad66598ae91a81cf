//! A power-loss test layer for Intake (a test tool, not part of `intake`).
//!
//! [`PowercutFs`] is a FUSE passthrough over a backing directory that keeps
//! every file write in memory until the file is fsync'd; cutting its
//! [`Power`] drops what was not, as a power failure drops a disk's volatile
//! cache. `deploy/tests/power-loss.sh` mounts one per node and cuts them
//! under load; the binary's `verify` and `adapter` commands are the checks
//! that script runs.

pub mod fs;
pub mod mount;
pub mod pending;

pub use fs::{Power, PowercutFs};
pub use mount::{MountError, mount_config};
