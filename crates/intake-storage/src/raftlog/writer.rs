//! The one thread that writes the log: it takes every job that is waiting,
//! from every shard, encodes them into one buffer, writes it with one call and
//! makes it durable with one `fdatasync` — group commit across shards, with
//! one thread hand-off per round instead of one per shard or per entry.
//!
//! A failed write or fsync is sticky: after it the kernel may have dropped
//! the dirty pages, so a later successful fsync would prove nothing
//! ("fsyncgate"). Every later job fails, and the node stops.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::record::{self, Op};
use super::segment;
use super::state::Loc;
use crate::ShardId;

/// A round stops taking more jobs past this many bytes, so one round's
/// buffer stays bounded whatever the load.
const ROUND_BYTES: usize = 8 << 20;

/// What one caller wants written, and where to say it is durable.
pub struct Job {
    pub shard: ShardId,
    pub ops: Vec<Op>,
    pub done: oneshot::Sender<io::Result<()>>,
}

/// What the writer's queue carries.
pub enum Msg {
    Write(Job),
    /// Finish what is queued before it, then end the thread.
    Stop,
}

pub struct Writer {
    pub shared: Arc<Shared>,
    pub dir: PathBuf,
    pub segment: u64,
    pub file: Arc<File>,
    pub len: u64,
    /// Sequence number of the next round.
    pub seq: u64,
    /// Rotate once the segment passes this size.
    pub segment_bytes: u64,
    pub failed: Option<(io::ErrorKind, String)>,
}

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut stopping = false;
        while !stopping {
            let mut jobs = match rx.blocking_recv() {
                Some(Msg::Write(job)) => vec![job],
                // A last round for what was set lazily, then stop.
                Some(Msg::Stop) | None => {
                    stopping = true;
                    Vec::new()
                }
            };
            let mut approx: usize = jobs.iter().map(job_bytes).sum();
            while !stopping && approx < ROUND_BYTES {
                match rx.try_recv() {
                    Ok(Msg::Write(job)) => {
                        approx += job_bytes(&job);
                        jobs.push(job);
                    }
                    Ok(Msg::Stop) => {
                        stopping = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.take_lazy(&mut jobs);
            if jobs.is_empty() {
                continue;
            }
            let result = self.round(&mut jobs, &mut buf);
            buf.clear();
            if buf.capacity() > 4 * ROUND_BYTES {
                buf.shrink_to(1 << 20);
            }
            for job in jobs {
                let reply = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                let _ = job.done.send(reply);
            }
        }
    }

    /// Puts pending lazily-set metadata in front of this round, as a job with
    /// no one waiting on it.
    fn take_lazy(&self, jobs: &mut Vec<Job>) {
        let pending = std::mem::take(&mut *self.shared.lazy.lock());
        for ((shard, kind), value) in pending {
            let (done, _) = oneshot::channel();
            jobs.insert(
                0,
                Job {
                    shard,
                    ops: vec![Op::Meta { kind, value }],
                    done,
                },
            );
        }
    }

    fn round(&mut self, jobs: &mut [Job], buf: &mut Vec<u8>) -> io::Result<()> {
        if let Some((kind, msg)) = &self.failed {
            return Err(io::Error::new(*kind, format!("raft log failed earlier: {msg}")));
        }
        let started = Instant::now();
        let result = self.write_round(jobs, buf);
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log write failed; the log is now broken until restart");
            self.failed = Some((e.kind(), e.to_string()));
            self.shared.failed.send_replace(self.failed.clone());
        }
        metrics::histogram!("intake_raftlog_round_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    fn write_round(&mut self, jobs: &mut [Job], buf: &mut Vec<u8>) -> io::Result<()> {
        let checkpoint = if self.len >= self.segment_bytes {
            self.rotate()?
        } else {
            Vec::new()
        };
        let start = record::begin_round(buf);
        for (shard, op) in &checkpoint {
            record::encode(*shard, op, buf);
        }
        let mut placed: Vec<(usize, usize, Option<Loc>)> = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            for (o, op) in job.ops.iter().enumerate() {
                record::encode(job.shard, op, buf);
                let loc = match op {
                    Op::Entry { bytes, .. } => Some(Loc {
                        segment: self.segment,
                        offset: self.len + (buf.len() - bytes.len()) as u64,
                        len: bytes.len() as u32,
                    }),
                    _ => None,
                };
                placed.push((j, o, loc));
            }
        }
        record::finish_round(buf, start, self.seq);
        self.file.write_all_at(buf, self.len)?;
        // A no-op unless a test build injects a failing disk.
        intake_disk::injected_fsync_fault()?;
        self.file.sync_data()?;
        self.len += buf.len() as u64;
        self.seq += 1;
        self.shared.rounds.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("intake_raftlog_fsyncs_total").increment(1);
        metrics::counter!("intake_raftlog_bytes_total").increment(buf.len() as u64);
        {
            let mut index = self.shared.index.write();
            for (j, o, loc) in placed {
                let job = &mut jobs[j];
                let op = &mut job.ops[o];
                if let Op::Entry { bytes, .. } = op {
                    // The index keeps locations; free the copy now.
                    *bytes = Vec::new();
                }
                index.apply(job.shard, op, loc);
            }
        }
        self.collect_garbage_now()
    }

    /// Starts a new segment; its first round begins with the returned
    /// checkpoint of every shard, so older segments are needed only for the
    /// entries they still hold.
    fn rotate(&mut self) -> io::Result<Vec<(ShardId, Op)>> {
        let next = self.segment + 1;
        let file = Arc::new(segment::create(&self.dir, next)?);
        let checkpoint = self.shared.index.read().checkpoint();
        self.shared.files.write().insert(next, Arc::clone(&file));
        self.segment = next;
        self.file = file;
        self.len = 0;
        Ok(checkpoint)
    }

    /// Deletes segments, other than the one being written, that hold no live
    /// entry. Their records are all superseded by the newer segments'
    /// checkpoints.
    pub fn collect_garbage_now(&mut self) -> io::Result<()> {
        let dead: Vec<u64> = {
            // Lock order everywhere: files, then index.
            let files = self.shared.files.read();
            let index = self.shared.index.read();
            files
                .keys()
                .copied()
                .filter(|id| *id != self.segment && index.live.get(id).copied().unwrap_or(0) == 0)
                .collect()
        };
        if dead.is_empty() {
            return Ok(());
        }
        {
            let mut files = self.shared.files.write();
            let mut index = self.shared.index.write();
            for id in &dead {
                files.remove(id);
                index.live.remove(id);
            }
        }
        for id in &dead {
            segment::remove(&self.dir, *id)?;
        }
        segment::sync_dir(&self.dir)
    }
}

fn job_bytes(job: &Job) -> usize {
    job.ops
        .iter()
        .map(|op| match op {
            Op::Entry { bytes, .. } => bytes.len() + 32,
            Op::Meta { value, .. } => value.as_ref().map_or(0, Vec::len) + 32,
            _ => 32,
        })
        .sum()
}
