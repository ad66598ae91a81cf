//! Benchmarks live beside this file: `cargo bench -p intake-benches`, and the
//! cluster scripts (`submit-throughput.sh`).
