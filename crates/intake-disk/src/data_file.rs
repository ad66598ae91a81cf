//! Our own handle on sled's data file, and the one place an `fdatasync` of it
//! happens, so a test can make it fail (feature `fault-injection`).

use std::fs::File;
use std::io;
use std::path::Path;
#[cfg(feature = "fault-injection")]
use std::sync::Arc;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub struct DataFile {
    file: File,
    #[cfg(feature = "fault-injection")]
    fail: Arc<AtomicBool>,
}

impl DataFile {
    pub fn open(path: &Path) -> io::Result<DataFile> {
        Ok(DataFile {
            file: File::open(path)?,
            #[cfg(feature = "fault-injection")]
            fail: Arc::new(AtomicBool::new(false)),
        })
    }

    /// `fdatasync` of sled's data file: what makes sled's writes survive a
    /// power cut.
    pub fn sync_data(&self) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        if self.fail.load(Ordering::Relaxed) || crate::fault::fsync_should_fail() {
            return Err(crate::fault::injected());
        }
        self.file.sync_data()
    }

    /// Test-only: every later `sync_data` on this handle fails with EIO.
    #[cfg(feature = "fault-injection")]
    pub fn fail_syncs(&self) {
        self.fail.store(true, Ordering::Relaxed);
    }

    /// Test-only: `sync_data` works again (a disk that "recovered").
    #[cfg(feature = "fault-injection")]
    pub fn heal_syncs(&self) {
        self.fail.store(false, Ordering::Relaxed);
    }
}
