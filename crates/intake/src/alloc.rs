//! The process's allocator.
//!
//! sled copies a leaf node on every write to it, and a node in a surge
//! refuses tens of thousands of complaints a second, each a handful of short
//! allocations. Under glibc's malloc, `perf` on a node in the 5x batched
//! surge (`benches/overload.sh`) put about 29 % of its samples in the
//! allocator (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`, `free`);
//! jemalloc's size classes and thread caches make that cheap, and the same
//! case acknowledged about half as many complaints again per second.
//!
//! The price is memory: peak RSS per node after the whole surge script was
//! 328-374 MiB against 267-282 MiB with glibc capped at two arenas, in runs
//! one after the other; the bound is 512 MiB.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
