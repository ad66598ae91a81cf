//! The durable append path: sled write, group-commit flush, fdatasync of
//! sled's data file, for batches of 1, 16 and 256 entries of ~512-byte
//! complaints. Throughput is reported in entries per second.

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

fn bench_append(c: &mut Criterion) {
    let (rt, _dir, storage) = intake_benches::runtime_and_storage();
    let mut log = storage.log_store(0).unwrap();
    let mut next: u64 = 1;

    let mut group = c.benchmark_group("storage_append_fsync");
    group.measurement_time(Duration::from_secs(8)).sample_size(20);
    for batch in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let entries: Vec<Entry> = (next..next + batch).map(entry).collect();
                        next += batch;
                        log.append(entries, IOFlushed::noop()).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    rt.block_on(storage.shutdown());
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
