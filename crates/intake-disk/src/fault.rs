//! Test-only fault injection, compiled only with the `fault-injection`
//! feature (which only test builds enable, through dev-dependencies).
//!
//! A whole process (a real `intake start`) is told to fail its fsyncs through
//! the environment: while the file named by [`FAIL_FSYNC_IF_EXISTS`] exists,
//! every fsync of sled's data file fails with EIO. A file rather than a flag
//! lets a test start a healthy node and break its disk later.

use std::io;

/// Environment variable naming the trigger file.
pub const FAIL_FSYNC_IF_EXISTS: &str = "INTAKE_FAULT_FAIL_FSYNC_IF_EXISTS";

pub(crate) fn fsync_should_fail() -> bool {
    std::env::var_os(FAIL_FSYNC_IF_EXISTS).is_some_and(|p| std::path::Path::new(&p).exists())
}

pub(crate) fn injected() -> io::Error {
    io::Error::from_raw_os_error(5) // EIO, what a failing disk reports
}
