//! The C allocator under SQLite, tuned once at start-up.
//!
//! SQLite (bundled by `libsqlite3-sys`) allocates with the C library's
//! `malloc`, not Rust's allocator. On glibc, each of sqlx's SQLite worker
//! threads gets its own malloc arena, and glibc hands the free memory at the
//! top of an arena back to the kernel (`madvise`) as soon as it passes
//! 128 KiB. SQLite's page cache and FTS5's doclist buffers free and take
//! that much on nearly every query, so the next query faults the same pages
//! back in, zeroed. Profiled on query-svc during the bench's substring
//! searches over 100,000 posts, the `madvise` calls and those page faults
//! were about 11 % of its CPU; with the threshold below, substring searches
//! served 20-27 % more calls per second, first pages the same, and peak RSS
//! did not move (the memory kept is memory the arena already reached).
//! See docs/performance.md.
//!
//! Elsewhere (musl, macOS) this does nothing.

/// Free memory an arena keeps at its top instead of returning it.
pub const TRIM_THRESHOLD: usize = 8 << 20;

/// Makes glibc keep up to [`TRIM_THRESHOLD`] of free memory per arena
/// (`M_TRIM_THRESHOLD`), unless the operator set it already
/// (`MALLOC_TRIM_THRESHOLD_`, or `glibc.malloc.trim_threshold` in
/// `GLIBC_TUNABLES`), which wins. Call it once at start-up
/// (`postmesh_common::server::main` does). Returns whether the setting was made.
pub fn keep_freed_memory() -> bool {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some() || tunables.contains("glibc.malloc.trim_threshold") {
        return false;
    }
    set_trim_threshold(TRIM_THRESHOLD)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_trim_threshold(bytes: usize) -> bool {
    let Ok(bytes) = libc::c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: mallopt takes two integers and only changes malloc's own
    // parameters under its lock; it is documented as safe to call at any
    // time, from any thread.
    unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, bytes) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_trim_threshold(_bytes: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_threshold_is_set_on_glibc() {
        let set = super::set_trim_threshold(super::TRIM_THRESHOLD);
        assert_eq!(set, cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}
