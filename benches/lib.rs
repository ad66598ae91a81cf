//! Benchmarks live beside this file: `cargo bench -p intake-benches`, the
//! cluster scripts (`submit-throughput.sh`, `overload.sh`, `compare-etcd.sh`)
//! and the `grpc-load` driver. This library only carries the generated gRPC
//! code the driver speaks (etcd's `KV.Put`, a no-op service) and the complaint
//! the micro-benchmarks share.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use intake_core::Complaint;
use intake_storage::{NodeStorage, StorageConfig};
use tempfile::TempDir;

/// etcd's v3 `KV.Put`, hand-written with etcd's wire field numbers.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// A unary call that does nothing, to measure the transport's ceiling.
pub mod noop {
    tonic::include_proto!("intake.bench.noop");
}

/// A typical hotline complaint with a 400-byte text and key `bench-{i}`.
pub fn complaint(i: u64) -> Complaint {
    Complaint {
        idempotency_key: format!("bench-{i}"),
        channel: "phone".into(),
        district: "110105".into(),
        category: "noise".into(),
        text: "x".repeat(400),
        location: None,
        contact: String::new(),
        reported_at: Some(1_700_000_000_000),
        attachments: vec![],
    }
}

/// A 2-worker runtime and a node's storage in a fresh temp dir (opened inside
/// the runtime: the group-commit flusher is a task). Setup for benches only:
/// it panics on failure.
pub fn runtime_and_storage() -> (tokio::runtime::Runtime, TempDir, NodeStorage) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = rt
        .block_on(async {
            NodeStorage::open(StorageConfig {
                dir: dir.path().to_path_buf(),
                cache_capacity_bytes: 64 << 20,
            })
        })
        .unwrap();
    (rt, dir, storage)
}
