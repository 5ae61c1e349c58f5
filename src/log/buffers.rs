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
//!
//! A leader serving a catch-up encodes one answer after another, each freed once
//! sent, and the allocator hands such memory back to the kernel as it goes. The
//! buffers handed back after a send ([`give_back`]) are therefore kept as spares
//! for the next large message ([`for_message`]), a few at most and only while
//! large messages keep coming: spares unused for [`SPARE_IDLE`] are released
//! ([`release_idle_spares`], on every tick of the log loop), so an idle member
//! does not hold a catch-up's buffers.
//!
//! The catching-up member cannot reuse its buffers: it keeps them. Populating
//! them is still most of its network thread's work (about 330 of its 420 ms in
//! a 256 MiB catch-up profile, mostly the kernel zeroing pages), and that thread
//! reads, decrypts and hands on every answer in turn. So each large frame's
//! buffer is populated ahead, by a helper thread, while the frame before it is
//! read ([`for_incoming`]): the zeroing moves to the other core.

use std::mem::MaybeUninit;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Buffers at least this large are populated when allocated; below it a buffer
/// is a few pages, which fault in cheaply enough.
pub const POPULATE_MIN_BYTES: usize = 1 << 20;
/// Spare buffers kept at most: a catch-up keeps a few answers in flight
/// (`CATCHUP_PIPELINE_DEPTH`) per peer.
pub const MAX_SPARES: usize = 4;
/// Spares not taken or given back for this long are released.
pub const SPARE_IDLE: Duration = Duration::from_secs(1);

/// Sent buffers kept for the next large message (see the module documentation).
struct SparePool {
    spares: Mutex<Option<Spares>>,
}

struct Spares {
    buffers: Vec<Vec<u8>>,
    last_used: Instant,
}

/// The process's pool: every link hands its sent buffers back here.
static SPARES: SparePool = SparePool::new();

/// A buffer for an encoded message of `size` bytes: a spare of the right size if
/// one was given back, else a new one ([`with_capacity_populated`]).
pub fn for_message(size: usize) -> Vec<u8> {
    SPARES.take(size)
}

/// Takes back a buffer whose message was sent, as a spare if it is large and
/// there is room.
pub fn give_back(buffer: Vec<u8>) {
    SPARES.give_back(buffer);
}

/// Releases the spares if no large message was encoded or sent for
/// [`SPARE_IDLE`]; cheap enough for every tick.
pub fn release_idle_spares() {
    SPARES.release_idle_for(SPARE_IDLE);
    INCOMING.release_idle_for(SPARE_IDLE);
}

impl SparePool {
    const fn new() -> SparePool {
        SparePool {
            spares: Mutex::new(None),
        }
    }

    fn take(&self, size: usize) -> Vec<u8> {
        if size >= POPULATE_MIN_BYTES {
            let mut spares = lock(&self.spares);
            if let Some(spares) = spares.as_mut() {
                spares.last_used = Instant::now();
                // At most twice the size: a spare much larger would hold memory
                // the message does not use.
                if let Some(index) = spares
                    .buffers
                    .iter()
                    .position(|b| b.capacity() >= size && b.capacity() / 2 <= size)
                {
                    let mut buffer = spares.buffers.swap_remove(index);
                    buffer.clear();
                    return buffer;
                }
            }
        }
        with_capacity_populated(size)
    }

    fn give_back(&self, buffer: Vec<u8>) {
        if buffer.capacity() < POPULATE_MIN_BYTES {
            return;
        }
        let mut spares = lock(&self.spares);
        let spares = spares.get_or_insert_with(|| Spares {
            buffers: Vec::new(),
            last_used: Instant::now(),
        });
        spares.last_used = Instant::now();
        if spares.buffers.len() < MAX_SPARES {
            spares.buffers.push(buffer);
        }
    }

    fn release_idle_for(&self, idle: Duration) {
        let Ok(mut spares) = self.spares.try_lock() else {
            // In use right now: not idle.
            return;
        };
        if spares
            .as_ref()
            .is_some_and(|spares| spares.last_used.elapsed() >= idle)
        {
            *spares = None;
        }
    }

    /// How many spares the pool holds.
    #[cfg(test)]
    fn held(&self) -> usize {
        let spares = lock(&self.spares);
        spares.as_ref().map_or(0, |spares| spares.buffers.len())
    }
}

/// A pool's state stays consistent at every point a holder could panic (each
/// change is one assignment or push), so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Buffers for incoming large frames, populated ahead of need by a helper thread
/// (see [`for_incoming`]).
struct IncomingStock {
    state: Mutex<StockState>,
    wanted: std::sync::Condvar,
}

struct StockState {
    /// A populated buffer waiting for the next large frame.
    ready: Option<Vec<u8>>,
    /// The run of large frames in progress; `None` before the first one and once
    /// the stock was released for idleness.
    run: Option<FrameRun>,
    /// The helper is to populate a buffer for the run's frame size.
    pending: bool,
    helper: HelperState,
}

#[derive(Clone, Copy)]
struct FrameRun {
    /// The size of the last large frame: what the next one is expected to be.
    latest: usize,
    /// When it came.
    at: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HelperState {
    NotStarted,
    Running,
    /// It could not be started: frames populate their own buffers.
    Unavailable,
}

/// Whether a stocked buffer of `capacity` may take a frame of `size`: it is kept
/// with the frame's values, so it may waste at most a sixteenth of the frame.
fn stock_fits(capacity: usize, size: usize) -> bool {
    capacity >= size && capacity - size <= size / 16
}

/// The process's stock: every link reads its large frames into buffers from here.
static INCOMING: IncomingStock = IncomingStock::new();

/// A buffer for an incoming frame of `size` bytes, which will be kept as long as
/// the values in it are. Large frames come in runs (a catch-up's answers, nearly
/// all of the same size), so after each one a helper thread populates a buffer for
/// the next, on another core, while this one is read, decrypted and decoded:
/// populating is most of the receiving side's cost of a catch-up (see the module
/// documentation). A stocked buffer is taken only if it wastes at most a
/// sixteenth of its size, since it is kept with the values.
pub fn for_incoming(size: usize) -> Vec<u8> {
    INCOMING.take(size)
}

impl IncomingStock {
    const fn new() -> IncomingStock {
        IncomingStock {
            state: Mutex::new(StockState {
                ready: None,
                run: None,
                pending: false,
                helper: HelperState::NotStarted,
            }),
            wanted: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StockState> {
        lock(&self.state)
    }

    fn take(&'static self, size: usize) -> Vec<u8> {
        if size < POPULATE_MIN_BYTES {
            return with_capacity_populated(size);
        }
        let mut state = self.lock();
        state.run = Some(FrameRun {
            latest: size,
            at: Instant::now(),
        });
        let taken = state
            .ready
            .take()
            .filter(|buffer| stock_fits(buffer.capacity(), size));
        if state.helper == HelperState::NotStarted {
            let started = std::thread::Builder::new()
                .name("buffer-stock".into())
                .spawn(move || self.run_helper())
                .is_ok();
            state.helper = if started {
                HelperState::Running
            } else {
                HelperState::Unavailable
            };
        }
        if state.helper == HelperState::Running {
            state.pending = true;
            self.wanted.notify_one();
        }
        drop(state);
        taken.unwrap_or_else(|| with_capacity_populated(size))
    }

    /// Populates a buffer for the latest frame size whenever one is wanted, outside
    /// the lock. A buffer that no longer fits (the frames changed size meanwhile)
    /// is dropped and another one made.
    fn run_helper(&self) {
        let mut state = self.lock();
        loop {
            let (true, Some(FrameRun { latest: size, .. })) = (state.pending, state.run) else {
                state = self
                    .wanted
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            state.pending = false;
            drop(state);
            // A little headroom: the next frame of a run may be a few bytes larger.
            let buffer = with_capacity_populated(size + size / 32);
            state = self.lock();
            match state.run {
                Some(run) if stock_fits(buffer.capacity(), run.latest) => {
                    state.ready = Some(buffer);
                }
                Some(_) => state.pending = true,
                None => {}
            }
        }
    }

    /// Drops the stocked buffer if no large frame came for `idle`.
    fn release_idle_for(&self, idle: Duration) {
        let Ok(mut state) = self.state.try_lock() else {
            // In use right now: not idle.
            return;
        };
        if state.run.is_some_and(|run| run.at.elapsed() >= idle) {
            state.ready = None;
            state.run = None;
            state.pending = false;
        }
    }

    /// The stocked buffer's capacity and address.
    #[cfg(test)]
    fn stocked(&self) -> Option<(usize, *const u8)> {
        let state = self.lock();
        state
            .ready
            .as_ref()
            .map(|buffer| (buffer.capacity(), buffer.as_ptr()))
    }
}

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
    fn a_buffer_given_back_serves_the_next_message_of_its_size_until_idle() {
        let pool = SparePool::new();
        let size = 4 << 20;
        let mut sent = pool.take(size);
        sent.resize(size, 1);
        let address = sent.as_ptr();
        pool.give_back(sent);
        assert_eq!(pool.held(), 1);
        // Too large for a small message, and a small buffer is never kept.
        let small = pool.take(POPULATE_MIN_BYTES);
        assert!(small.as_ptr() != address);
        assert_eq!(pool.held(), 1);
        pool.give_back(vec![0; 1024]);
        assert_eq!(pool.held(), 1);
        let reused = pool.take(size - 100);
        assert_eq!(reused.as_ptr(), address, "the spare is reused");
        assert!(reused.is_empty(), "and handed out empty");
        pool.give_back(reused);
        // Not idle yet: kept; idle: released.
        pool.release_idle_for(SPARE_IDLE);
        assert_eq!(pool.held(), 1);
        pool.release_idle_for(Duration::ZERO);
        assert_eq!(pool.held(), 0);
    }

    #[test]
    fn at_most_a_few_spares_are_kept() {
        let pool = SparePool::new();
        for _ in 0..MAX_SPARES + 3 {
            pool.give_back(Vec::with_capacity(POPULATE_MIN_BYTES));
        }
        assert_eq!(pool.held(), MAX_SPARES);
    }

    #[test]
    fn small_buffers_are_left_alone() {
        let buffer = with_capacity_populated(POPULATE_MIN_BYTES - 1);
        assert!(buffer.is_empty() && buffer.capacity() >= POPULATE_MIN_BYTES - 1);
        assert!(with_capacity_populated(0).capacity() == 0);
    }

    /// Waits (bounded) for the helper to stock a buffer.
    fn wait_for_stock(stock: &IncomingStock) -> (usize, *const u8) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(stocked) = stock.stocked() {
                return stocked;
            }
            assert!(Instant::now() < deadline, "nothing stocked within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn each_large_frame_gets_the_buffer_populated_after_the_one_before() {
        let stock: &'static IncomingStock = Box::leak(Box::new(IncomingStock::new()));
        let size = 4 << 20;
        let first = stock.take(size);
        assert!(first.is_empty() && first.capacity() >= size);
        let (capacity, address) = wait_for_stock(stock);
        assert!(stock_fits(capacity, size) && stock_fits(capacity, size + 1000));
        // The next frame of the run, a little larger, is read into it.
        let second = stock.take(size + 1000);
        assert_eq!(second.as_ptr(), address, "the stocked buffer is used");
        assert!(second.is_empty());
        // And the one after that gets another.
        let (_, next) = wait_for_stock(stock);
        assert!(next != address);
    }

    #[test]
    fn a_stocked_buffer_much_larger_than_the_frame_is_not_used() {
        let stock: &'static IncomingStock = Box::leak(Box::new(IncomingStock::new()));
        let size = 8 << 20;
        let _first = stock.take(size);
        let (capacity, _) = wait_for_stock(stock);
        assert!(capacity > size);
        // Half the size: the stocked buffer would keep 4 MiB of nothing alive, so
        // the frame gets one of its own size. (Not told apart by address: the
        // stocked one is freed first, and its address may come back.)
        let smaller = stock.take(size / 2);
        assert_eq!(smaller.capacity(), size / 2);
        // The stock follows the new size.
        let (capacity, _) = wait_for_stock(stock);
        assert!(stock_fits(capacity, size / 2));
    }

    #[test]
    fn the_stock_is_released_when_no_large_frame_comes() {
        let stock: &'static IncomingStock = Box::leak(Box::new(IncomingStock::new()));
        let _first = stock.take(2 << 20);
        wait_for_stock(stock);
        // Not idle yet: kept; idle: released, and not stocked again.
        stock.release_idle_for(SPARE_IDLE);
        assert!(stock.stocked().is_some());
        stock.release_idle_for(Duration::ZERO);
        assert!(stock.stocked().is_none());
        std::thread::sleep(Duration::from_millis(50));
        assert!(stock.stocked().is_none());
        // Small frames never touch it.
        assert_eq!(stock.take(1024).capacity(), 1024);
        assert!(stock.stocked().is_none() && stock.lock().run.is_none());
    }
}
