//! The disk rules shared by a node's storage and the adapter's outbox, kept
//! in one place so the two cannot drift apart:
//!
//! * [`open_sled`] opens sled with segments large enough that no page goes to
//!   its never-fsync'd `blobs/`, after removing torn snapshot files that
//!   would make the open fail.
//! * [`DataFile`] is our own handle on sled's data file: sled's flush ends in
//!   `sync_file_range`, which is not durable across power loss, so durability
//!   comes from our `fdatasync` on it.
//! * [`replace_file`] writes a small file atomically and durably (tmp, fsync,
//!   rename, fsync of the directory); [`SlotFile`] rewrites a small record in
//!   place with one write and one `fdatasync`, for per-round state.

mod atomic_file;
mod data_file;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod sled_open;
mod slot_file;

pub use atomic_file::{read_small_file, replace_file, sync_dir};
pub use data_file::DataFile;
pub use sled_open::{SEGMENT_SIZE_BYTES, SledOpenError, open_sled, remove_torn_snapshots};
pub use slot_file::{SLOT_BYTES, SlotFile};

/// Fails like a broken disk's fsync while a test has asked for it (feature
/// `fault-injection`, see `fault.rs`); `Ok` otherwise, and always in shipped
/// builds. Call it just before an `fdatasync` whose failure a test exercises.
pub fn injected_fsync_fault() -> std::io::Result<()> {
    #[cfg(feature = "fault-injection")]
    if fault::fsync_should_fail() {
        return Err(fault::injected());
    }
    Ok(())
}
