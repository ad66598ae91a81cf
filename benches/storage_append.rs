//! The durable append path, candidates side by side: the log engine Intake
//! uses (`raftlog`, through openraft's `LogStore::append`) and the sled path
//! it replaced (insert the batch into a sled tree, `flush`, `fdatasync` of
//! sled's data file — what `LogStore::append` did before). Batches of 1, 16
//! and 256 entries of one ~512-byte complaint each, then 8 shards appending
//! one entry at a time concurrently (the multi-shard case the engine's shared
//! rounds are for). Criterion reports time and entries/s; each case also
//! prints the process CPU time per entry (utime+stime from /proc, every
//! thread, sled's own included), since a faster append that burns more CPU
//! would not help a 2-core node.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use intake_benches::complaint;
use intake_core::Command;
use intake_storage::TypeConfig;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};

type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;

fn entry(index: u64) -> Entry {
    let log_id = openraft::testing::log_id::<TypeConfig>(1, 1, index);
    Entry::new_normal(
        log_id,
        Command::Submit {
            accepted_at: 1_700_000_000_000,
            complaints: vec![complaint(index)],
        },
    )
}

/// Process CPU time (all threads) in microseconds.
fn cpu_us() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name, which is in parentheses.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    ticks * 1_000_000 / 100
}

/// Accumulates CPU and entries over criterion's iterations of one case.
#[derive(Default)]
struct CpuTally {
    cpu_us: AtomicU64,
    entries: AtomicU64,
}

impl CpuTally {
    fn add(&self, cpu_us: u64, entries: u64) {
        self.cpu_us.fetch_add(cpu_us, Ordering::Relaxed);
        self.entries.fetch_add(entries, Ordering::Relaxed);
    }
    fn report(&self, case: &str) {
        let e = self.entries.load(Ordering::Relaxed).max(1);
        println!(
            "cpu {case}: {:.1} µs per entry over {e} entries",
            self.cpu_us.load(Ordering::Relaxed) as f64 / e as f64
        );
    }
}

fn bench_append(c: &mut Criterion) {
    let (rt, _dir, storage) = intake_benches::runtime_and_storage();
    let mut log = storage.log_store(0).unwrap();
    let mut next: u64 = 1;

    // sled as the log used to use it: 8 MiB segments, one tree per shard.
    let sled_dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(sled_dir.path())
        .cache_capacity(64 << 20)
        .segment_size(intake_storage::SEGMENT_SIZE_BYTES)
        .open()
        .unwrap();
    let tree = db.open_tree("log.0").unwrap();
    let data_file = File::open(sled_dir.path().join("db")).unwrap();

    let mut group = c.benchmark_group("storage_append_fsync");
    group.measurement_time(Duration::from_secs(8)).sample_size(20);
    for batch in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(batch));
        let tally = CpuTally::default();
        group.bench_with_input(BenchmarkId::new("raftlog", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let (start, cpu) = (Instant::now(), cpu_us());
                    for _ in 0..iters {
                        let entries: Vec<Entry> = (next..next + batch).map(entry).collect();
                        next += batch;
                        log.append(entries, IOFlushed::noop()).await.unwrap();
                    }
                    tally.add(cpu_us() - cpu, iters * batch);
                    start.elapsed()
                })
            })
        });
        tally.report(&format!("raftlog/{batch}"));
        let tally = CpuTally::default();
        group.bench_with_input(BenchmarkId::new("sled", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let (start, cpu) = (Instant::now(), cpu_us());
                for _ in 0..iters {
                    let mut b = sled::Batch::default();
                    for i in next..next + batch {
                        b.insert(&i.to_be_bytes(), postcard::to_stdvec(&entry(i)).unwrap());
                    }
                    next += batch;
                    tree.apply_batch(b).unwrap();
                    db.flush().unwrap();
                    data_file.sync_data().unwrap();
                }
                tally.add(cpu_us() - cpu, iters * batch);
                start.elapsed()
            })
        });
        tally.report(&format!("sled/{batch}"));
    }

    // Eight shards, one entry per append each, all at once.
    let shards: Vec<_> = (1..=8u32).map(|s| storage.log_store(s).unwrap()).collect();
    group.throughput(Throughput::Elements(8));
    let tally = CpuTally::default();
    group.bench_function("raftlog/8_shards_x1", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let (start, cpu) = (Instant::now(), cpu_us());
                let tasks: Vec<_> = shards
                    .iter()
                    .cloned()
                    .map(|mut log| {
                        let first = next;
                        tokio::spawn(async move {
                            for i in first..first + iters {
                                log.append(vec![entry(i)], IOFlushed::noop()).await.unwrap();
                            }
                        })
                    })
                    .collect();
                next += iters;
                for t in tasks {
                    t.await.unwrap();
                }
                tally.add(cpu_us() - cpu, iters * 8);
                start.elapsed()
            })
        })
    });
    tally.report("raftlog/8_shards_x1");
    group.finish();
    rt.block_on(storage.shutdown());
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
