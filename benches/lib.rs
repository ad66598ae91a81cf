//! Benchmarks live beside this file: `cargo bench -p intake-benches`, the
//! cluster scripts (`submit-throughput.sh`, `overload.sh`, `compare-etcd.sh`)
//! and the `grpc-load` driver. This library only carries the generated gRPC
//! code the driver speaks (etcd's `KV.Put`, a no-op service) and the complaint
//! the micro-benchmarks share.

use intake_core::Complaint;

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
