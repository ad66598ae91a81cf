//! The sink's alerts file: each `DispatchService.Alert` it receives, one
//! JSON line per surge event, fdatasync'd before the call is answered. Alerts
//! come at least once (again after a change of shard leader); a reader
//! deduplicates by (`kind`, `district`, `category`, `since`, `at`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use intake_proto::dispatch::v1 as dpb;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::SinkError;

/// One line of the alerts file; times in Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub kind: String,
    pub district: String,
    pub category: String,
    pub rate: f64,
    pub baseline: f64,
    pub since: i64,
    pub at: i64,
    pub shard: u32,
}

fn millis(ts: Option<&intake_proto::Timestamp>) -> i64 {
    ts.map_or(0, |ts| {
        ts.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(ts.nanos) / 1_000_000)
    })
}

impl AlertRecord {
    pub fn from_pb(shard: u32, a: &dpb::SurgeAlert) -> Self {
        Self {
            kind: a.kind.clone(),
            district: a.district.clone(),
            category: a.category.clone(),
            rate: a.rate,
            baseline: a.baseline,
            since: millis(a.since.as_ref()),
            at: millis(a.at.as_ref()),
            shard,
        }
    }
}

pub(crate) struct AlertsFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl AlertsFile {
    pub(crate) fn open(path: &Path) -> Result<Self, SinkError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends the records and syncs them. Blocking.
    pub(crate) fn append(&self, records: &[AlertRecord]) -> io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        let mut file = self.file.lock();
        file.write_all(&buf)?;
        file.sync_data()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads an alerts file (for tests and checks); a torn last line is skipped.
pub fn read_alerts(path: &Path) -> Result<Vec<AlertRecord>, SinkError> {
    let text = std::fs::read_to_string(path).map_err(|source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
