//! How the master asks glibc's allocator to keep memory it will need again.
//!
//! A catch-up moves the log in answers of up to 4 MiB: each is read into a frame
//! buffer, decoded into values and encoded into WAL records, and all of that is
//! freed a few milliseconds later. With glibc's defaults, a block that large is
//! `mmap`ed and `munmap`ed every time, and a heap whose free top passes 128 KiB
//! is trimmed back to the kernel, so every answer faulted its pages in afresh
//! (on this project's benchmark VM, each first touch is also a host fault). A
//! profile of a catch-up showed the receiving member's CPU dominated by page
//! faults and page clearing rather than by copying its bytes.
//!
//! [`keep_freed_memory_for_reuse`] raises both thresholds, so such blocks come
//! from, and return to, the heap:
//! - blocks below [`MMAP_THRESHOLD_BYTES`] (above the 16 MiB frame limit) are
//!   served from the heap;
//! - up to [`TRIM_THRESHOLD_BYTES`] of free memory at a heap's top is kept.
//!
//! Measured with `bench --phases catchup` (256 MiB, 4 runs each, same machine):
//! 227-249 MB/s with the defaults, 316-318 MB/s with both; raising only one of
//! the two gained little or nothing. The price is that a master that has just
//! moved megabytes keeps up to 16 MiB per arena it could have returned; the idle
//! RSS, measured before any load, is unchanged.

/// Allocations below this come from the heap rather than a private mapping: above
/// the largest frame ([`crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES`]), and
/// glibc's own maximum for this setting on 64-bit targets.
pub const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// Free memory at the top of a heap kept rather than given back: a few answers'
/// worth.
pub const TRIM_THRESHOLD_BYTES: usize = 16 << 20;

const _: () = assert!(
    crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES as usize <= MMAP_THRESHOLD_BYTES,
    "a frame buffer must come from the heap"
);

/// Applies both thresholds (see the module documentation). Returns false where
/// they do not apply: an allocator other than glibc's, or a setting it refused.
/// Call it first thing in `main`; it is safe to call more than once.
pub fn keep_freed_memory_for_reuse() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters; both values are in
        // the ranges glibc documents, and it reports a refusal by returning 0.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as i32) };
        // SAFETY: as above.
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES as i32) };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
