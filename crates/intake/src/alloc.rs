//! The C allocator's settings, made before any thread starts.
//!
//! glibc gives threads that contend for the heap arenas of their own, up to
//! eight per core. Tokio's workers, its blocking threads and sled's threads
//! then leave freed memory spread over many arenas, where it is neither
//! reused by the others nor returned to the system: in the surge benchmark
//! (`benches/overload.sh`, 10x capacity offered), peak RSS per node was
//! 498-548 MiB with glibc's default and 389-416 MiB with two arenas, in
//! consecutive runs of the same script, with throughput within the noise.
//! The bound is 512 MiB, so two it is. `MALLOC_ARENA_MAX`, if set, wins.

/// Caps glibc's malloc arenas at two, unless `MALLOC_ARENA_MAX` is set.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator parameters; it is called
        // first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
