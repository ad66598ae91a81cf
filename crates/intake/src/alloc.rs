//! The process's allocator.
//!
//! sled copies a leaf node on every write to it, and a node under a surge
//! refuses tens of thousands of requests a second, each a handful of short
//! allocations. Under glibc's malloc, `perf` on a node in the 5x surge
//! (benches/overload.sh) put about 29 % of its samples in the allocator
//! (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`, `free`), and its
//! arenas kept freed memory that RSS never gave back. jemalloc's size-class
//! slabs and per-thread caches make both cheap.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
