//! The allocator settings of `mesos-master` (`master::memory`): a frame-sized block
//! comes from the heap and, once freed, stays there for the next one. Its own test
//! binary: glibc's statistics are process-wide, and other tests allocating in
//! parallel threads would blur them.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use mesos_operator::master::memory::keep_freed_memory_for_reuse;

const BLOCK: usize = 4 << 20;

fn stats() -> libc::mallinfo2 {
    // SAFETY: `mallinfo2` only reads the allocator's statistics.
    unsafe { libc::mallinfo2() }
}

#[test]
fn a_frame_sized_block_comes_from_the_heap_and_stays_there_once_freed() {
    // With glibc's defaults both checks fail: the block is mmapped (and unmapped
    // on free), and a heap top of 4 MiB would be trimmed.
    assert!(keep_freed_memory_for_reuse(), "glibc refused the settings");
    let before = stats();
    let block = vec![1u8; BLOCK];
    let during = stats();
    assert!(
        during.hblkhd < before.hblkhd + BLOCK,
        "a 4 MiB block was mmapped: {} -> {} mapped bytes",
        before.hblkhd,
        during.hblkhd
    );
    assert!(
        during.uordblks >= before.uordblks + BLOCK,
        "the heap does not hold the block: {} -> {} bytes in use",
        before.uordblks,
        during.uordblks
    );
    drop(block);
    let after = stats();
    assert!(
        after.fordblks >= during.fordblks + BLOCK - (64 << 10),
        "the freed block went back to the kernel: {} -> {} free heap bytes",
        during.fordblks,
        after.fordblks
    );
}
