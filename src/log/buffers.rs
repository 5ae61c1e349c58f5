//! Large buffers (MiBs: catch-up answers, accept batches) whose pages are faulted
//! in with one `madvise(MADV_POPULATE_WRITE)` when they are allocated, rather than
//! one page fault per 4 KiB page as they are first written.
//!
//! A catch-up moves the whole log through such buffers: the leader encodes each
//! answer into a fresh one, the catching-up member reads each answer into a fresh
//! one and keeps it (the values it holds are slices of it). Faulting their pages
//! one by one cost each member more CPU than the copies themselves: on the
//! development VM a first touch costs about 2.7 us per page (the host backs guest
//! memory lazily and takes freed memory back), which made page faults 47% of the
//! receiving member's network threads. Populating the pages in one call does the
//! same work without an exception per page: in a profile of the catch-up bench
//! (256 MiB) the receiving member's network threads spent about 150 ms in the
//! `madvise` where they had spent about 200 ms in page faults, and catch-up ran
//! at 379 and 436 MB/s against 355 and 319 without (same binary, runs
//! alternating, a noisy disk). The pages are still first-touched, on the guest
//! and the host: only keeping fewer values in memory would remove that cost.

use std::mem::MaybeUninit;

/// Buffers at least this large are populated when allocated; below it a buffer
/// is a few pages, which fault in cheaply enough.
pub const POPULATE_MIN_BYTES: usize = 1 << 20;

/// An empty buffer with room for `capacity` bytes. From [`POPULATE_MIN_BYTES`]
/// on, the pages wholly inside its allocation are faulted in now, as writes would
/// fault them (best effort: a kernel older than 5.14 refuses the advice, and the
/// pages then fault in one by one as they are written).
pub fn with_capacity_populated(capacity: usize) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(capacity);
    if capacity >= POPULATE_MIN_BYTES {
        populate(buffer.spare_capacity_mut());
    }
    buffer
}

/// Faults in the pages wholly inside `region`; whether the kernel did.
#[cfg(target_os = "linux")]
fn populate(region: &mut [MaybeUninit<u8>]) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    };
    let start = region.as_mut_ptr() as usize;
    let first = start.next_multiple_of(page);
    let end = (start + region.len()) / page * page;
    if end <= first {
        return false;
    }
    // SAFETY: [first, end) lies within `region`, memory the caller owns
    // exclusively; MADV_POPULATE_WRITE faults its pages in without changing a
    // byte of them (the pages stay as uninitialized as they were).
    let advised = unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            end - first,
            libc::MADV_POPULATE_WRITE,
        )
    };
    advised == 0
}

#[cfg(not(target_os = "linux"))]
fn populate(_region: &mut [MaybeUninit<u8>]) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    fn minor_faults() -> i64 {
        let mut usage = MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the struct it is given.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: filled above (and zeroed before).
        unsafe { usage.assume_init() }.ru_minflt
    }

    #[test]
    fn a_large_buffer_is_written_without_page_faults() {
        const BYTES: usize = 16 << 20;
        let mut probe: Vec<u8> = Vec::with_capacity(BYTES);
        if !populate(probe.spare_capacity_mut()) {
            eprintln!("SKIP: this kernel refuses MADV_POPULATE_WRITE (Linux < 5.14)");
            return;
        }
        drop(probe);
        let mut buffer = with_capacity_populated(BYTES);
        assert!(buffer.is_empty() && buffer.capacity() >= BYTES);
        let before = minor_faults();
        buffer.resize(BYTES, 0x5a);
        let populated = minor_faults() - before;
        // The same writes into a buffer left to fault page by page.
        let mut plain: Vec<u8> = Vec::with_capacity(BYTES);
        let before = minor_faults();
        plain.resize(BYTES, 0x5a);
        let faulted = minor_faults() - before;
        // 4096 pages; at most its first and last partial pages fault.
        assert!(
            populated <= 2,
            "{populated} faults writing a populated buffer"
        );
        assert!(faulted > 1000, "only {faulted} faults writing a plain one");
        assert!(buffer == plain);
    }

    #[test]
    fn small_buffers_are_left_alone() {
        let buffer = with_capacity_populated(POPULATE_MIN_BYTES - 1);
        assert!(buffer.is_empty() && buffer.capacity() >= POPULATE_MIN_BYTES - 1);
        assert!(with_capacity_populated(0).capacity() == 0);
    }
}
