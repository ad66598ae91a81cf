//! The state machine's write pattern on each candidate store, per complaint:
//! sled 0.34 as the node writes it today (one transaction over the trees of
//! the shards with a batch ready, `sm_writer.rs`), sled with one
//! `apply_batch` per tree, and fjall 3 (one atomic batch over keyspaces, not
//! fsync'd, as apply is not: the Raft log is the durable copy).
//!
//! A round is `SHARDS` shards × `PER_SHARD` complaints, as a node sees it in
//! the spread benchmark (about two shards per round, four complaints per
//! entry; `intake_sm_write_round_batches`, `intake_batch_complaints`). Per
//! complaint: a lookup of its idempotency key (a miss), then the ticket
//! (~550 bytes), the key → id record, the age record and the incident
//! record; per shard, the delivery and applied states. Keys are fresh, so
//! the trees grow as they do under load.
#![allow(clippy::unwrap_used, clippy::expect_used)] // bench: a failure is the answer

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sled::Transactional;

const SHARDS: usize = 2;
const PER_SHARD: usize = 4;
const TICKET: usize = 550;
const INCIDENT: usize = 130;

type Record = (Vec<u8>, Vec<u8>);

/// The records of complaint `n` of shard `s`: (key lookup, writes).
fn records(s: usize, n: u64) -> (Vec<u8>, Vec<Record>) {
    let idem = format!("k{:032x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ s as u64).into_bytes();
    let mut id = vec![b't'];
    id.extend_from_slice(&n.to_be_bytes());
    let mut age = vec![b'a'];
    age.extend_from_slice(&(1_700_000_000_000u64 + n).to_be_bytes());
    age.extend_from_slice(&n.to_be_bytes());
    let mut inc = vec![b'j'];
    inc.extend_from_slice(&(n / 3).to_be_bytes());
    let writes = vec![
        (id.clone(), vec![7u8; TICKET]),
        (idem.clone(), id[1..].to_vec()),
        (age, idem.clone()),
        (inc, vec![3u8; INCIDENT]),
    ];
    (idem, writes)
}

fn shard_state() -> [Record; 2] {
    [
        (b"d".to_vec(), vec![1u8; 40]),
        (b"m/state".to_vec(), vec![2u8; 100]),
    ]
}

fn sled_db(dir: &std::path::Path) -> (sled::Db, Vec<sled::Tree>) {
    let db = sled::Config::new()
        .path(dir)
        .segment_size(8 << 20)
        .cache_capacity(256 << 20)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let trees = (0..SHARDS)
        .map(|s| db.open_tree(format!("sm.{s}")).unwrap())
        .collect();
    (db, trees)
}

fn sled_batches(trees: &[sled::Tree], n: &mut u64) -> Vec<sled::Batch> {
    trees
        .iter()
        .enumerate()
        .map(|(s, tree)| {
            let mut batch = sled::Batch::default();
            for _ in 0..PER_SHARD {
                let (idem, writes) = records(s, *n);
                *n += 1;
                assert!(tree.get(&idem).unwrap().is_none());
                for (k, v) in writes {
                    batch.insert(k, v);
                }
            }
            for (k, v) in shard_state() {
                batch.insert(k, v);
            }
            batch
        })
        .collect()
}

/// One round as the node wrote it with sled: a transaction over the trees.
fn sled_transaction_round(trees: &[sled::Tree], n: &mut u64) {
    let batches = sled_batches(trees, n);
    trees
        .transaction(|tx| {
            for (t, batch) in tx.iter().zip(&batches) {
                t.apply_batch(batch)?;
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        })
        .unwrap();
}

fn fjall_db(dir: &std::path::Path) -> (fjall::Database, Vec<fjall::Keyspace>) {
    let db = fjall::Database::builder(dir).open().unwrap();
    let spaces = (0..SHARDS)
        .map(|s| {
            db.keyspace(&format!("sm.{s}"), || {
                fjall::KeyspaceCreateOptions::default()
                    .max_memtable_size(8 << 20)
                    .manual_journal_persist(true)
            })
            .unwrap()
        })
        .collect();
    (db, spaces)
}

/// One round as `intake_storage::store` writes it: one fjall batch.
fn fjall_round(db: &fjall::Database, spaces: &[fjall::Keyspace], n: &mut u64) {
    let mut batch = db.batch();
    for (s, ks) in spaces.iter().enumerate() {
        for _ in 0..PER_SHARD {
            let (idem, writes) = records(s, *n);
            *n += 1;
            assert!(ks.get(&idem).unwrap().is_none());
            for (k, v) in writes {
                batch.insert(ks, k, v);
            }
        }
        for (k, v) in shard_state() {
            batch.insert(ks, k, v);
        }
    }
    batch.commit().unwrap();
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sm_store_round");
    group.measurement_time(Duration::from_secs(6)).sample_size(20);
    group.throughput(Throughput::Elements((SHARDS * PER_SHARD) as u64));
    let dir = tempfile::tempdir().unwrap();
    let timed = |iters: u64, mut round: Box<dyn FnMut() + '_>| {
        let start = Instant::now();
        for _ in 0..iters {
            round();
        }
        start.elapsed()
    };

    let (_db, trees) = sled_db(&dir.path().join("tx"));
    let mut n = 0u64;
    group.bench_function(BenchmarkId::new("sled", "transaction"), |b| {
        b.iter_custom(|iters| timed(iters, Box::new(|| sled_transaction_round(&trees, &mut n))))
    });

    let (_db2, trees2) = sled_db(&dir.path().join("batch"));
    let mut n = 0u64;
    group.bench_function(BenchmarkId::new("sled", "apply_batch_per_tree"), |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                Box::new(|| {
                    for (tree, batch) in trees2.iter().zip(sled_batches(&trees2, &mut n)) {
                        tree.apply_batch(batch).unwrap();
                    }
                }),
            )
        })
    });

    let (db, spaces) = fjall_db(&dir.path().join("fjall"));
    let mut n = 0u64;
    group.bench_function(BenchmarkId::new("fjall", "one_batch"), |b| {
        b.iter_custom(|iters| timed(iters, Box::new(|| fjall_round(&db, &spaces, &mut n))))
    });
    group.finish();
}

/// utime + stime of this process (every thread: sled's IO threads and
/// fjall's flush and compaction workers count), in microseconds.
fn process_cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks * 1e6 / 100.0
}

/// `ROUNDS` rounds of each store with process CPU measured around them, so
/// that background threads are counted too; one line per store. Enough
/// rounds (about 130 MB written) that fjall flushes memtables and compacts.
fn cpu(_c: &mut Criterion) {
    const ROUNDS: u64 = 20_000;
    let per = (SHARDS * PER_SHARD) as f64 * ROUNDS as f64;
    let dir = tempfile::tempdir().unwrap();
    let report = |name: &str, cpu0: f64, t0: Instant| {
        // Let background work started by the writes finish and be counted.
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "store={name} rounds={ROUNDS} cpu_us_per_complaint={:.1} wall_us_per_complaint={:.1}",
            (process_cpu_us() - cpu0) / per,
            (t0.elapsed() - Duration::from_secs(2)).as_secs_f64() * 1e6 / per
        );
    };
    {
        let (_db, trees) = sled_db(&dir.path().join("tx"));
        let mut n = 0u64;
        let (cpu0, t0) = (process_cpu_us(), Instant::now());
        for _ in 0..ROUNDS {
            sled_transaction_round(&trees, &mut n);
        }
        report("sled_transaction", cpu0, t0);
    }
    {
        let (db, spaces) = fjall_db(&dir.path().join("fjall"));
        let mut n = 0u64;
        let (cpu0, t0) = (process_cpu_us(), Instant::now());
        for _ in 0..ROUNDS {
            fjall_round(&db, &spaces, &mut n);
        }
        report("fjall_batch", cpu0, t0);
    }
}

criterion_group!(benches, bench, cpu);
criterion_main!(benches);
