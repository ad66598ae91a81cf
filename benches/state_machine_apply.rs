//! State-machine apply cost of one Submit entry of 1, 16 and 256 complaints
//! on a real sled directory, through openraft's public
//! `RaftStateMachine::apply` (no responders). Every complaint has a fresh
//! idempotency key, so each creates a ticket and a key index entry.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use intake_benches::complaint;
use intake_core::Command;
use intake_storage::TypeConfig;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;

type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;

fn bench_apply(c: &mut Criterion) {
    let (rt, _dir, storage) = intake_benches::runtime_and_storage();
    let mut sm = storage.state_machine(0).unwrap();
    let mut index: u64 = 1;
    let mut key: u64 = 0;

    let mut group = c.benchmark_group("state_machine_apply");
    group.measurement_time(Duration::from_secs(5)).sample_size(20);
    for batch in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let entries: Vec<Entry> = (0..iters)
                    .map(|_| {
                        let complaints = (key..key + batch).map(complaint).collect();
                        key += batch;
                        let e = Entry::new_normal(
                            openraft::testing::log_id::<TypeConfig>(1, 1, index),
                            Command::Submit {
                                accepted_at: 1_700_000_000_000,
                                complaints,
                            },
                        );
                        index += 1;
                        e
                    })
                    .collect();
                rt.block_on(async {
                    let start = Instant::now();
                    for e in entries {
                        let stream = futures::stream::iter([Ok((e, None))]);
                        sm.apply(stream).await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    rt.block_on(storage.shutdown());
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
