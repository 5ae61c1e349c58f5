//! A durable, checksummed write-ahead store with group commit: the bytes under a
//! replica's promises and accepted actions.
//!
//! The store is byte-level on purpose: it knows three operations and nothing of the
//! Paxos core's types, so the core and the store can change independently.
//!
//! - `WalOp::Meta(bytes)`: the replica's metadata (status, promise, log id), last
//!   write wins;
//! - `WalOp::Put { position, bytes }`: the record of one log position, overwriting an
//!   earlier record of the same position (`WalOp::PutParts` is the same record,
//!   handed over in pieces so a shared value is copied only into the write);
//! - `WalOp::TruncateBelow(position)`: drop every position below `position`
//!   (monotonic: a lower value than the current one is a no-op). A `Put` below the
//!   truncation point is dropped, so replay and the live state always agree.
//!
//! A `WriteBatch` is a list of ops applied in order and atomically: after a crash
//! either all of a batch is recovered or none of it. [`Wal::write`] (blocking) and
//! [`Wal::write_async`] (tokio) return only once the batch is on disk (fdatasync), so
//! the driver may send the replies that depend on it. One writer thread drains the
//! queue, writes everything queued, fdatasyncs once and completes all the waiters
//! (group commit): many concurrent batches share one fdatasync.
//!
//! ```no_run
//! use mesos_operator::log::wal::{Wal, WalOptions, WriteBatch};
//! # fn main() -> Result<(), mesos_operator::log::wal::WalError> {
//! let (wal, recovered) = Wal::open("/var/lib/mesos/replicated_log".as_ref(), WalOptions::default())?;
//! // `recovered.meta`, `recovered.positions`, `recovered.truncated_below`: the
//! // replica's state as of the last durable batch.
//! wal.write(WriteBatch::new().put(recovered.positions.len() as u64, b"action".to_vec()).meta(b"promise".to_vec()))?;
//! // Only now may the reply that depends on the batch be sent.
//! # Ok(()) }
//! ```
//!
//! # On-disk format
//!
//! The directory holds segments `<segment_id:020>.wal` (ids increase, gaps are
//! allowed after deletion) and a `LOCK` file held while a [`Wal`] is open. A segment
//! starts with a 16-byte header (`SEGMENT_MAGIC`, then the segment id, u64 LE) and
//! continues with records (little endian):
//!
//! ```text
//! 0..4    header_crc   crc32c of bytes 4..22
//! 4..8    payload_len  u32, at most MAX_RECORD_PAYLOAD_BYTES
//! 8       kind         1 = meta, 2 = put, 3 = truncate-below
//! 9       flags        bit 0: last record of its batch
//! 10..18  position     u64 (put: the position; truncate: the bound; meta: 0)
//! 18..22  payload_crc  crc32c of the payload
//! 22..    payload
//! ```
//!
//! Two checksums let recovery tell a torn tail from corruption: the header's own
//! checksum makes the length trustworthy before it is used.
//!
//! # Recovery
//!
//! [`Wal::open`] replays every segment in id order. The last segment may end in
//! zeros after its last whole batch: the runway (see [`WalOptions::runway_bytes`])
//! the writer keeps ahead of its records, which it goes on writing over. In the
//! LAST segment a torn tail — an incomplete header, a record running past the end
//! of the file, a bad checksum on a final record followed by nothing but zeros, or
//! records of a batch without its last record — is what a crash in the middle of a
//! write leaves: it is cut away and reported in [`Recovered::torn_tail`] (and as a
//! warning). Anything else that does not check out is [`WalError::Corrupt`], naming
//! the file, the byte offset and the position if the header was intact; nothing
//! past it is ever served. A sealed segment is cut to its records before the next
//! one is created, so zeros at its end are corruption too.
//!
//! # Space
//!
//! Each segment's live bytes are tracked (the current record of each retained
//! position, the latest meta, the latest truncation bound). After each group commit
//! a sealed segment with no live bytes is deleted. A sealed segment whose live bytes
//! are below `1 / COMPACTION_GARBAGE_RATIO` of its size is compacted, one segment at
//! a time (oldest first) and incrementally: each group commit first writes, as a
//! batch of its own ahead of the group's batches and under the group's single
//! fdatasync, byte-identical copies of the segment's next records that are still
//! live, at most [`WalOptions::compaction_step_bytes`] (1 MiB) or twice the group's
//! own bytes, whichever is larger, and at least one record. So no commit waits for
//! more than one such step (a whole segment's live records, ~32 MB, used to be
//! copied in one commit and stalled every waiter for 530-660 ms). The segment is
//! deleted once its last live record has a durable copy (the original's live bytes
//! reach zero after the fdatasync). Compaction advances only with commits: without
//! writes, nothing grows.
//!
//! Crash safety: a copy is made only of the record that is live at that moment,
//! and any newer write of the same position (or a truncation above it) lands later
//! in the active segment, so replay applies the original, then the identical copy,
//! then the newer write: a crash at any step replays to the state the index had. A
//! record that dies (overwritten, truncated) while its segment is being compacted is
//! skipped when its turn comes, so it is never copied past its killer. Meta and
//! truncation-bound records are copied under the same rule; a copied truncation
//! bound applies again on replay and drops whatever it dropped before. No record
//! format change: copies are ordinary batches.
//!
//! Disk bound: every sealed segment not awaiting compaction holds at least
//! `1 / COMPACTION_GARBAGE_RATIO` live bytes, so the disk holds at most
//! `COMPACTION_GARBAGE_RATIO` times the live data, plus the active segment, plus the
//! segments awaiting or under compaction. A commit copies at least twice what it
//! appends, so a compaction (at most half a segment of live bytes) finishes while
//! the writes alongside add at most about a quarter segment plus one group: writes
//! alone never let the queue of candidates grow. It grows only when overwrites or
//! truncations turn sealed segments into candidates, which adds no bytes, and each
//! candidate compacted then frees more than the writes alongside add. Tested
//! (`a_long_run_with_many_rolls_keeps_disk_usage_bounded`, checked after every
//! commit): with 50% garbage on every roll, usage stays within `2 × live + 3`
//! segments.

//! # Measured (`wal_bench`, 256-byte puts, real fdatasync, 2-core VM, virtio disk)
//!
//! | what                         | appends/s | p50      |
//! | ---------------------------- | --------- | -------- |
//! | raw write + fdatasync, 1     | ~3,200    | ~0.25 ms |
//! | this store, 1 writer         | ~3,100    | ~0.29 ms |
//! | this store, 64 writers       | 48k–70k   | ~1 ms    |
//! | redb 2.6, 1 writer           | ~2,750    | ~0.32 ms |
//! | redb 2.6, 64 writers         | ~2,600    | ~24 ms   |
//!
//! The runway, measured later on the same VM (its disk had become slower; runs
//! alternating): 1 writer 3,060 and 3,390 appends/s (p50 0.26, 0.23 ms) with it,
//! 2,150 and 2,370 (p50 0.36, 0.35 ms) without; 64 writers 48.6k against 24.2k.
//! This file system (ext4 without a journal) writes the inode block synchronously
//! in the fdatasync of every append that grows the file. Through three masters:
//! 16 writers 6.0-6.2k appends/s against 4.6-4.9k, 64 writers +5%.
//!
//! A second run while other builds loaded the shared disk: fdatasync p50 3.7 ms,
//! this store ~300/s with 1 writer and ~42k/s (p50 1.3 ms) with 64; redb ~315/s and
//! ~690/s (p99 1.2 s).
//!
//! Commit latency across segment rolls (`examples/wal_roll_latency.rs`: 64 writers,
//! 256-byte puts, every position written twice so each roll starts a compaction,
//! 64 MiB segments, 25 s, 3 rolls, while other builds loaded the machine): with the
//! whole-segment compaction the worst commit waited 1.75 s and 0.49 s in two runs
//! (0.33-0.65 s at every roll); with the incremental compaction (1 MiB per group
//! commit) the worst was 95 ms and 78 ms (the worst per second is typically 10-20
//! ms; the loaded shared disk also gives 40-60 ms spikes away from any roll), at
//! 44k-45k appends/s (34k-45k/s before).
//!
//! Bulk writes (`examples/wal_bulk_write.rs`: 256 MiB of 64 KiB records in 4 MiB
//! batches, what a catch-up asks): 450-590 MB/s while the written pages stayed in
//! the page cache, 770-820 MB/s since each commit drops its durable pages. On this
//! VM a page the guest never touched costs a host fault on first use, so a write
//! into fresh cache pages ran at ~200 MB/s (a plain `dd` too) against ~1 GB/s into
//! recycled ones; a master catching up 256 MiB went from 100-122 to 160-217 MB/s.
//! Encoding batches straight into the group's buffer and keeping that buffer
//! across commits cut the writer thread's page faults from ~5,200 to ~1,100 per
//! 256 MiB; with glibc's malloc thresholds pinned (so the comparison is not
//! decided by its heuristics) the whole run went from 194k to 66k faults and from
//! 1.64 to 1.27 s of CPU (149 -> 244 MB/s, on a disk shared with other builds).
//! Large values now skip that buffer too: the group is written with one `pwritev`
//! from where they lie (`gather`).
//!
//! One writer sits on the fdatasync floor; 64 writers share ~50 batches per
//! fdatasync. redb (Durability::Immediate, one transaction per batch) serializes
//! writers and syncs each commit, so concurrency buys it nothing; it would need the
//! same group commit on top. Hence a purpose-built log: append-only, group-committed,
//! and with recovery rules (torn tail vs corruption) we state and test ourselves.
//!
//! # Limits
//!
//! - A bit flip inside the payload of the very last record of the last segment is
//!   indistinguishable from a torn write and is cut as a torn tail (reported).
//! - Dropping the last [`Wal`] handle joins the writer thread; from async code, drop
//!   it on a blocking thread if the queue may be long.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use gather::GroupBytes;

/// First bytes of every segment: a file that does not start with them is not ours.
pub const SEGMENT_MAGIC: [u8; 8] = *b"MLOGWAL1";
/// Magic (8) + segment id (8).
pub const SEGMENT_HEADER_BYTES: usize = 16;
/// See the format table in the module documentation.
pub const RECORD_HEADER_BYTES: usize = 22;
/// Upper bound on one record's payload. A Mesos log entry is a registry operation or
/// snapshot; 64 MiB is far above any sane one, and a length above it can only be
/// corruption (the header checksum would usually catch it first).
pub const MAX_RECORD_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;
/// Default segment size: large enough that rolling is rare, small enough that
/// truncation frees space in useful steps.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of batches that may wait for the writer; senders beyond it wait
/// (backpressure) rather than growing memory without bound.
pub const DEFAULT_QUEUE_CAPACITY_BATCHES: usize = 4096;
/// One group commit writes at most this many bytes before it fdatasyncs, so one
/// flood of writers cannot delay the first waiter without bound.
pub const DEFAULT_MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// A sealed segment is compacted when its size is more than this many times its live
/// bytes (garbage dominates).
pub const COMPACTION_GARBAGE_RATIO: u64 = 2;
/// Default bytes of live records one group commit copies for compaction (more when
/// the group itself is large; see [`WalOptions::compaction_step_bytes`]). About 4 ms
/// of extra writing on a disk that sustains 250 MB/s, instead of copying a whole
/// segment's live records (~32 MB, 530-660 ms measured) in one commit.
pub const DEFAULT_COMPACTION_STEP_BYTES: usize = 1024 * 1024;
/// Default zeros kept written ahead of the active segment's last record (see
/// [`WalOptions::runway_bytes`]).
pub const DEFAULT_RUNWAY_BYTES: u64 = 1024 * 1024;
/// Zeros written per call when the runway is extended.
static ZERO_CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];
/// One compaction step reads its records in one span of the segment; the span may
/// hold garbage between them, but never more than this many times the step's bytes
/// (the step stops early instead), so sparse live records cannot make one step read
/// a whole segment.
const COMPACTION_READ_SPAN_FACTOR: u64 = 4;

const KIND_META: u8 = 1;
const KIND_PUT: u8 = 2;
const KIND_TRUNCATE: u8 = 3;
const FLAG_END_OF_BATCH: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_END_OF_BATCH;
const SEGMENT_SUFFIX: &str = ".wal";
const LOCK_FILE_NAME: &str = "LOCK";

/// Errors of the store. Every variant names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {context}: {source}")]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "write-ahead log segment {path} is corrupt at byte offset {offset}{}: {reason}",
        position.map(|p| format!(" (record of position {p})")).unwrap_or_default()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        position: Option<u64>,
        reason: String,
    },
    #[error("write-ahead log directory {path} is in use by another process or handle")]
    Locked { path: PathBuf },
    #[error("write-ahead log {path}: record payload of {payload_bytes} bytes exceeds the maximum of {MAX_RECORD_PAYLOAD_BYTES}")]
    RecordTooLarge { path: PathBuf, payload_bytes: usize },
    /// An earlier write or fdatasync failed. After a failed fdatasync the kernel may
    /// have dropped the dirty pages, so nothing later can be trusted to be durable
    /// ("fsyncgate"): the store refuses all further writes until reopened.
    #[error("write-ahead log {path} failed earlier and refuses writes until reopened: {reason}")]
    Poisoned { path: PathBuf, reason: String },
    #[error("write-ahead log {path} is closed")]
    Closed { path: PathBuf },
}

/// Store options. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// A segment is sealed and a new one started once a write would take it past
    /// this size (a single larger batch gets a segment of its own).
    pub segment_size_bytes: u64,
    /// Batches that may wait for the writer thread.
    pub queue_capacity_batches: usize,
    /// Bytes written by one group commit before its fdatasync.
    pub max_group_bytes: usize,
    /// Live bytes of a segment under compaction that one group commit copies, at
    /// most: this or twice the bytes of the group's own batches, whichever is larger
    /// (so compaction always outpaces the writes it must make room for), and at
    /// least one record (so it always progresses).
    pub compaction_step_bytes: usize,
    /// Zeros kept written (and made durable) ahead of the active segment's last
    /// record, so that a small commit overwrites blocks the file already has
    /// instead of growing it: its fdatasync then writes the data alone, without
    /// the inode and allocation updates an append needs (on ext4 here: 0.19 ms
    /// against 0.25 ms for 256 bytes). Topped up by the commit that leaves less
    /// than half of it, under that commit's fdatasync; commits of a quarter of
    /// it or more (bulk writes, catch-up) append as they are, since zeroing
    /// ahead would only double their writes. 0 turns it off.
    pub runway_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            queue_capacity_batches: DEFAULT_QUEUE_CAPACITY_BATCHES,
            max_group_bytes: DEFAULT_MAX_GROUP_BYTES,
            compaction_step_bytes: DEFAULT_COMPACTION_STEP_BYTES,
            runway_bytes: DEFAULT_RUNWAY_BYTES,
        }
    }
}

/// One operation of a batch; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalOp {
    Meta(Vec<u8>),
    Put {
        position: u64,
        bytes: Vec<u8>,
    },
    /// A `Put` whose payload is given in pieces (see [`RecordParts`]); on disk
    /// the two are the same record.
    PutParts {
        position: u64,
        parts: RecordParts,
    },
    TruncateBelow(u64),
}

impl WalOp {
    /// The record's payload size, without its header.
    fn payload_len(&self) -> usize {
        match self {
            WalOp::Meta(bytes) | WalOp::Put { bytes, .. } => bytes.len(),
            WalOp::PutParts { parts, .. } => parts.len(),
            WalOp::TruncateBelow(_) => 0,
        }
    }
}

/// A record payload of `head ++ value ++ tail`, where `value` is a shared buffer
/// (a log value held by the replica too). The writer copies the three pieces
/// straight into its group buffer, so a large value is copied once on its way to
/// the disk instead of first into a record of its own: for a catch-up that is a
/// copy of every byte of the log saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordParts {
    pub head: Vec<u8>,
    pub value: bytes::Bytes,
    pub tail: Vec<u8>,
}

impl RecordParts {
    fn len(&self) -> usize {
        self.head.len() + self.value.len() + self.tail.len()
    }

    fn pieces(&self) -> [&[u8]; 3] {
        [&self.head, &self.value, &self.tail]
    }

    /// The payload in one piece, as it is on disk.
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces().concat()
    }
}

/// Ops persisted atomically and in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<WalOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn meta(mut self, bytes: Vec<u8>) -> Self {
        self.ops.push(WalOp::Meta(bytes));
        self
    }
    pub fn put(mut self, position: u64, bytes: Vec<u8>) -> Self {
        self.ops.push(WalOp::Put { position, bytes });
        self
    }
    pub fn put_parts(mut self, position: u64, parts: RecordParts) -> Self {
        self.ops.push(WalOp::PutParts { position, parts });
        self
    }
    pub fn truncate_below(mut self, position: u64) -> Self {
        self.ops.push(WalOp::TruncateBelow(position));
        self
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A torn tail cut away on open: what a crash during a write leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// The file was truncated to this length.
    pub offset: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// The state replayed from disk by [`Wal::open`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    pub meta: Option<Vec<u8>>,
    pub positions: BTreeMap<u64, Vec<u8>>,
    /// Every position below this has been truncated away (0: nothing truncated).
    pub truncated_below: u64,
    pub torn_tail: Option<TornTail>,
}

/// Counters of the writer, readable at any time (for metrics and tests).
#[derive(Debug, Default)]
pub struct WalStats {
    pub batches_written: AtomicU64,
    pub group_commits: AtomicU64,
    /// fdatasync calls on segment files (group commits, rolls and compactions).
    pub fdatasyncs: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub segments_deleted: AtomicU64,
    /// Segments deleted after compaction copied their last live record.
    pub segments_compacted: AtomicU64,
    /// Bytes of live records copied by compaction (record headers included).
    pub compaction_bytes_copied: AtomicU64,
    /// The most compaction bytes any single group commit copied: the bound a commit
    /// waits for (see [`WalOptions::compaction_step_bytes`]).
    pub max_compaction_bytes_per_commit: AtomicU64,
    /// Puts dropped because their position was already truncated away.
    pub puts_below_truncation_dropped: AtomicU64,
    /// Zero bytes written ahead of the records (see [`WalOptions::runway_bytes`]).
    pub runway_bytes_zeroed: AtomicU64,
}

type Completion = oneshot::Sender<Result<(), WalError>>;

struct Request {
    batch: WriteBatch,
    done: Completion,
}

struct Inner {
    dir: PathBuf,
    sender: Option<mpsc::Sender<Request>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WalStats>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; joining
        // releases the directory lock before a reopen.
        self.sender.take();
        if let Ok(mut writer) = self.writer.lock() {
            if let Some(handle) = writer.take() {
                let _ = handle.join();
            }
        }
    }
}

/// A handle to an open store: cheap to clone, `Send + Sync`. The writer thread stops
/// (and the directory lock is released) when the last clone is dropped.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.inner.dir).finish()
    }
}

impl Wal {
    /// Opens (creating if needed) the store in `dir`, replays it and starts the
    /// writer thread. A corrupt store is an error: the caller must not vote on it.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        let io_err = |context| io_error(dir, context);
        fs::create_dir_all(dir).map_err(io_err("creating the directory"))?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("opening the lock file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(WalError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(WalError::Io {
                    path: lock_path,
                    context: "locking",
                    source,
                })
            }
        }

        let (state, recovered) = replay(dir)?;
        if let Some(torn) = &recovered.torn_tail {
            tracing::warn!(
                path = %torn.path.display(),
                offset = torn.offset,
                dropped_bytes = torn.dropped_bytes,
                reason = %torn.reason,
                "write-ahead log: cut away a torn tail left by an interrupted write"
            );
        }
        let stats = Arc::new(WalStats::default());
        let (sender, receiver) = mpsc::channel(options.queue_capacity_batches.max(1));
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            options,
            state,
            stats: stats.clone(),
            poisoned: None,
            compaction: None,
            buffer: Vec::new(),
            _lock: lock,
        };
        // Created (or reopened) here, so a store that cannot be written fails to open.
        let active = writer.open_active()?;
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(receiver, active))
            .map_err(io_err("starting the writer thread"))?;
        let wal = Wal {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                sender: Some(sender),
                writer: Mutex::new(Some(handle)),
                stats,
            }),
        };
        Ok((wal, recovered))
    }

    /// Persists `batch` and returns once it is durable. Blocks the calling thread:
    /// from async code use [`Wal::write_async`] (calling this on a tokio worker
    /// thread panics, as any blocking receive there does).
    pub fn write(&self, batch: WriteBatch) -> Result<(), WalError> {
        self.check(&batch)?;
        let (done, wait) = oneshot::channel();
        self.sender()?
            .blocking_send(Request { batch, done })
            .map_err(|_| self.closed())?;
        wait.blocking_recv().map_err(|_| self.closed())?
    }

    /// Persists `batch` and resolves once it is durable.
    pub async fn write_async(&self, batch: WriteBatch) -> Result<(), WalError> {
        self.check(&batch)?;
        let (done, wait) = oneshot::channel();
        self.sender()?
            .send(Request { batch, done })
            .await
            .map_err(|_| self.closed())?;
        wait.await.map_err(|_| self.closed())?
    }

    /// Shared with the writer; clone the `Arc` to read counters after the handle is
    /// gone.
    pub fn stats(&self) -> &Arc<WalStats> {
        &self.inner.stats
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Refuses a batch the writer would refuse, before it is queued: a caller's bug
    /// must not poison the store for everyone else.
    fn check(&self, batch: &WriteBatch) -> Result<(), WalError> {
        for op in &batch.ops {
            if op.payload_len() > MAX_RECORD_PAYLOAD_BYTES {
                return Err(WalError::RecordTooLarge {
                    path: self.inner.dir.clone(),
                    payload_bytes: op.payload_len(),
                });
            }
        }
        Ok(())
    }

    fn sender(&self) -> Result<&mpsc::Sender<Request>, WalError> {
        self.inner.sender.as_ref().ok_or_else(|| self.closed())
    }

    fn closed(&self) -> WalError {
        WalError::Closed {
            path: self.inner.dir.clone(),
        }
    }
}

/// Bytes the segment files of `dir` take on disk (their lengths), for tests and
/// metrics. A segment the writer deletes while this runs counts as gone.
pub fn disk_usage_bytes(dir: &Path) -> Result<u64, WalError> {
    let mut total = 0;
    for (_, path) in list_segments(dir)? {
        total += match fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(source) if source.kind() == io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(WalError::Io {
                    path,
                    context: "reading metadata",
                    source,
                })
            }
        };
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------
// Encoding

/// Where a record lives, for space accounting and compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordLoc {
    segment_id: u64,
    offset: u64,
    record_bytes: u64,
}

/// Appends one record whose payload is the concatenation of `payload`'s pieces.
fn encode_record<'a>(
    out: &mut GroupBytes<'a>,
    kind: u8,
    end_of_batch: bool,
    position: u64,
    payload: &[&'a [u8]],
) {
    let payload_len: usize = payload.iter().map(|piece| piece.len()).sum();
    let payload_crc = payload
        .iter()
        .fold(0, |crc, piece| crc32c::crc32c_append(crc, piece));
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[8] = kind;
    header[9] = if end_of_batch { FLAG_END_OF_BATCH } else { 0 };
    header[10..18].copy_from_slice(&position.to_le_bytes());
    header[18..22].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[4..]);
    header[..4].copy_from_slice(&header_crc.to_le_bytes());
    out.copy(&header);
    for piece in payload {
        out.share(piece);
    }
}

fn segment_path(dir: &Path, segment_id: u64) -> PathBuf {
    dir.join(format!("{segment_id:020}{SEGMENT_SUFFIX}"))
}

fn segment_header(segment_id: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0; SEGMENT_HEADER_BYTES];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..].copy_from_slice(&segment_id.to_le_bytes());
    header
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let io_err = |source| WalError::Io {
        path: dir.to_path_buf(),
        context: "listing segments",
        source,
    };
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        // Only names we write; anything else in the directory is left alone.
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(id) = stem.parse() {
                segments.push((id, entry.path()));
            }
        }
    }
    segments.sort();
    Ok(segments)
}

// ---------------------------------------------------------------------------------
// Replay

#[derive(Debug, Default)]
struct SegmentSpace {
    size_bytes: u64,
    live_bytes: u64,
}

/// The writer's view of what is on disk.
#[derive(Debug, Default)]
struct State {
    positions: BTreeMap<u64, RecordLoc>,
    meta: Option<RecordLoc>,
    truncate: Option<RecordLoc>,
    truncated_below: u64,
    segments: BTreeMap<u64, SegmentSpace>,
    /// The segment appended to (always the last one in `segments`).
    active_segment_id: u64,
}

impl State {
    fn add_live(&mut self, loc: RecordLoc) {
        if let Some(space) = self.segments.get_mut(&loc.segment_id) {
            space.live_bytes += loc.record_bytes;
        }
    }
    fn remove_live(&mut self, loc: RecordLoc) {
        if let Some(space) = self.segments.get_mut(&loc.segment_id) {
            debug_assert!(space.live_bytes >= loc.record_bytes);
            space.live_bytes = space.live_bytes.saturating_sub(loc.record_bytes);
        }
    }
    fn set_meta(&mut self, loc: RecordLoc) {
        if let Some(old) = self.meta.replace(loc) {
            self.remove_live(old);
        }
        self.add_live(loc);
    }
    /// Returns false if the put was dropped for being below the truncation point.
    fn set_position(&mut self, position: u64, loc: RecordLoc) -> bool {
        if position < self.truncated_below {
            return false;
        }
        if let Some(old) = self.positions.insert(position, loc) {
            self.remove_live(old);
        }
        self.add_live(loc);
        true
    }
    fn truncate_below(&mut self, bound: u64, loc: RecordLoc) {
        // Only a record that carries the highest bound is live: a lower bound written
        // later is a no-op, and keeping it instead would lower the bound once the
        // segment holding the higher one is reclaimed.
        if self.truncate.is_some() && bound < self.truncated_below {
            return;
        }
        if let Some(old) = self.truncate.replace(loc) {
            self.remove_live(old);
        }
        self.add_live(loc);
        if bound > self.truncated_below {
            self.truncated_below = bound;
            let kept = self.positions.split_off(&bound);
            let dropped = std::mem::replace(&mut self.positions, kept);
            for (_, old) in dropped {
                self.remove_live(old);
            }
        }
    }
}

/// A record decoded during replay.
struct Decoded<'a> {
    kind: u8,
    end_of_batch: bool,
    position: u64,
    payload: &'a [u8],
    record_bytes: usize,
}

enum Scan<'a> {
    Record(Decoded<'a>),
    /// What a crash in the middle of a write may leave (only acceptable at the end
    /// of the last segment).
    Torn(String),
    /// Nothing but zeros to the end: the runway the writer keeps ahead of its
    /// records, or a file system's extension that the data never reached. Either
    /// way no record is there (only acceptable in the last segment).
    Zeros,
    Corrupt {
        position: Option<u64>,
        reason: String,
    },
}

fn scan_record(bytes: &[u8]) -> Scan<'_> {
    if bytes.iter().all(|&b| b == 0) {
        return Scan::Zeros;
    }
    if bytes.len() < RECORD_HEADER_BYTES {
        return Scan::Torn(format!(
            "incomplete record header ({} of {RECORD_HEADER_BYTES} bytes)",
            bytes.len()
        ));
    }
    let header = &bytes[..RECORD_HEADER_BYTES];
    let stored_header_crc = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    // A write into the runway that was cut short leaves its first bytes and then
    // zeros, not a shorter file.
    let only_zeros_from = |offset: usize| bytes[offset..].iter().all(|&b| b == 0);
    if crc32c::crc32c(&header[4..]) != stored_header_crc {
        if only_zeros_from(RECORD_HEADER_BYTES) {
            return Scan::Torn("record header cut short, zeros after it".into());
        }
        return Scan::Corrupt {
            position: None,
            reason: "record header checksum mismatch".into(),
        };
    }
    let payload_bytes = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let kind = header[8];
    let flags = header[9];
    let mut position_le = [0; 8];
    position_le.copy_from_slice(&header[10..18]);
    let position = u64::from_le_bytes(position_le);
    let payload_crc = u32::from_le_bytes([header[18], header[19], header[20], header[21]]);
    // The header checksum held, so these fields are what the writer wrote.
    let known_position = (kind == KIND_PUT).then_some(position);
    if payload_bytes > MAX_RECORD_PAYLOAD_BYTES
        || !(KIND_META..=KIND_TRUNCATE).contains(&kind)
        || flags & !KNOWN_FLAGS != 0
    {
        return Scan::Corrupt {
            position: known_position,
            reason: format!(
                "impossible record header (kind {kind}, flags {flags:#x}, {payload_bytes} payload bytes)"
            ),
        };
    }
    let record_bytes = RECORD_HEADER_BYTES + payload_bytes;
    if bytes.len() < record_bytes {
        return Scan::Torn(format!(
            "record of {record_bytes} bytes runs past the end of the file ({} bytes left)",
            bytes.len()
        ));
    }
    let payload = &bytes[RECORD_HEADER_BYTES..record_bytes];
    if crc32c::crc32c(payload) != payload_crc {
        if only_zeros_from(record_bytes) {
            // The final record of the file, partly persisted.
            return Scan::Torn("payload checksum mismatch in the final record".into());
        }
        return Scan::Corrupt {
            position: known_position,
            reason: "record payload checksum mismatch".into(),
        };
    }
    Scan::Record(Decoded {
        kind,
        end_of_batch: flags & FLAG_END_OF_BATCH != 0,
        position,
        payload,
        record_bytes,
    })
}

fn replay(dir: &Path) -> Result<(State, Recovered), WalError> {
    let segments = list_segments(dir)?;
    let mut state = State::default();
    let mut recovered = Recovered::default();
    let last_index = segments.len().checked_sub(1);

    for (index, (segment_id, path)) in segments.iter().enumerate() {
        let is_last = Some(index) == last_index;
        let bytes = fs::read(path).map_err(|source| WalError::Io {
            path: path.clone(),
            context: "reading a segment",
            source,
        })?;
        let torn = replay_segment(
            &mut state,
            &mut recovered,
            *segment_id,
            path,
            &bytes,
            is_last,
        )?;
        if let Some(torn) = torn {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|source| WalError::Io {
                    path: path.clone(),
                    context: "opening to cut a torn tail",
                    source,
                })?;
            file.set_len(torn.offset)
                .and_then(|()| file.sync_all())
                .map_err(|source| WalError::Io {
                    path: path.clone(),
                    context: "cutting a torn tail",
                    source,
                })?;
            recovered.torn_tail = Some(torn);
        }
    }
    recovered.truncated_below = state.truncated_below;
    Ok((state, recovered))
}

/// Replays one segment's bytes into `state` and `recovered`: pure, no I/O, so the
/// fuzzers run the very code recovery runs. Returns the torn tail to cut (only ever
/// for the last segment); the caller cuts it from the file.
fn replay_segment(
    state: &mut State,
    recovered: &mut Recovered,
    segment_id: u64,
    path: &Path,
    bytes: &[u8],
    is_last: bool,
) -> Result<Option<TornTail>, WalError> {
    let corrupt = |offset: usize, position: Option<u64>, reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        position,
        reason,
    };

    // The header. A crash right after creating the last segment may leave it
    // short; the writer then rewrites it.
    let mut valid_len = SEGMENT_HEADER_BYTES;
    let mut torn: Option<(usize, String)> = None;
    if bytes.len() < SEGMENT_HEADER_BYTES {
        if !is_last {
            return Err(corrupt(0, None, "segment header is incomplete".into()));
        }
        torn = Some((0, "incomplete segment header".into()));
        valid_len = 0;
    } else if bytes[..SEGMENT_HEADER_BYTES] != segment_header(segment_id) {
        return Err(corrupt(
            0,
            None,
            format!("segment header is not {SEGMENT_MAGIC:?} with id {segment_id}"),
        ));
    }

    state.segments.insert(
        segment_id,
        SegmentSpace {
            size_bytes: 0,
            live_bytes: 0,
        },
    );
    state.active_segment_id = segment_id;

    // Records of the batch being read; applied when its last record is seen.
    let mut pending: Vec<(Decoded<'_>, RecordLoc)> = Vec::new();
    let mut batch_start = valid_len;
    let mut offset = valid_len;
    // Where the zeros after the last record start, if the segment ends in zeros.
    let mut zeros_from = None;
    if torn.is_none() {
        while offset < bytes.len() {
            match scan_record(&bytes[offset..]) {
                Scan::Record(record) => {
                    let loc = RecordLoc {
                        segment_id,
                        offset: offset as u64,
                        record_bytes: record.record_bytes as u64,
                    };
                    offset += record.record_bytes;
                    let end = record.end_of_batch;
                    pending.push((record, loc));
                    if end {
                        for (record, loc) in pending.drain(..) {
                            apply_replayed(state, recovered, record, loc);
                        }
                        batch_start = offset;
                    }
                }
                Scan::Torn(reason) if is_last => {
                    torn = Some((offset, reason));
                    break;
                }
                Scan::Torn(reason) => return Err(corrupt(offset, None, reason)),
                // A batch cut short by them is torn (below); after a whole batch
                // they are the runway, kept as it is.
                Scan::Zeros if is_last => {
                    zeros_from = Some(offset);
                    break;
                }
                // A segment is cut to its records when it is sealed.
                Scan::Zeros => {
                    return Err(corrupt(
                        offset,
                        None,
                        "zero fill at the end of a sealed segment".into(),
                    ))
                }
                Scan::Corrupt { position, reason } => {
                    return Err(corrupt(offset, position, reason))
                }
            }
        }
        if torn.is_none() && !pending.is_empty() {
            if !is_last {
                return Err(corrupt(
                    batch_start,
                    None,
                    "segment ends in the middle of a batch".into(),
                ));
            }
            torn = Some((batch_start, "batch without its last record".into()));
        }
    }
    valid_len = match &torn {
        // Records of the unfinished batch go with the torn tail.
        Some((offset, _)) => batch_start.min(*offset),
        None => zeros_from.unwrap_or(bytes.len()),
    };
    if let Some(space) = state.segments.get_mut(&segment_id) {
        space.size_bytes = valid_len as u64;
    }
    Ok(torn.map(|(_, reason)| TornTail {
        path: path.to_path_buf(),
        offset: valid_len as u64,
        dropped_bytes: (bytes.len() - valid_len) as u64,
        reason,
    }))
}

/// Replays segments given as `(segment id, bytes)` in id order exactly as
/// [`Wal::open`] would, without touching a disk (a torn tail is reported, not cut).
/// An entry point for the fuzzers (`fuzz/`) and tests, not for production code.
#[doc(hidden)]
pub fn replay_in_memory(segments: &[(u64, &[u8])]) -> Result<Recovered, WalError> {
    let mut state = State::default();
    let mut recovered = Recovered::default();
    let last_index = segments.len().checked_sub(1);
    for (index, (segment_id, bytes)) in segments.iter().enumerate() {
        let path = PathBuf::from(format!("{segment_id:020}{SEGMENT_SUFFIX}"));
        let is_last = Some(index) == last_index;
        if let Some(torn) = replay_segment(
            &mut state,
            &mut recovered,
            *segment_id,
            &path,
            bytes,
            is_last,
        )? {
            recovered.torn_tail = Some(torn);
        }
    }
    recovered.truncated_below = state.truncated_below;
    Ok(recovered)
}

/// A segment as the writer lays it out: the header, then each batch's records. For
/// the fuzzers' seeds and structured inputs (`fuzz/`), not for production code.
#[doc(hidden)]
pub fn encode_segment(segment_id: u64, batches: &[WriteBatch]) -> Vec<u8> {
    let mut out = GroupBytes::new(Vec::new());
    out.copy(&segment_header(segment_id));
    for batch in batches {
        encode_batch_into(&mut out, batch);
    }
    out.to_vec()
}

fn apply_replayed(
    state: &mut State,
    recovered: &mut Recovered,
    record: Decoded<'_>,
    loc: RecordLoc,
) {
    match record.kind {
        KIND_META => {
            state.set_meta(loc);
            recovered.meta = Some(record.payload.to_vec());
        }
        KIND_PUT => {
            if state.set_position(record.position, loc) {
                recovered
                    .positions
                    .insert(record.position, record.payload.to_vec());
            }
        }
        KIND_TRUNCATE => {
            state.truncate_below(record.position, loc);
            let kept = recovered.positions.split_off(&state.truncated_below);
            recovered.positions = kept;
        }
        _ => debug_assert!(false, "scan_record admits only known kinds"),
    }
}

// ---------------------------------------------------------------------------------
// The writer thread

struct Writer {
    dir: PathBuf,
    options: WalOptions,
    state: State,
    stats: Arc<WalStats>,
    poisoned: Option<String>,
    /// The sealed segment whose live records are being copied, a step per group
    /// commit.
    compaction: Option<Compaction>,
    /// The group commit's copy buffer (record headers and small payloads; large
    /// values are written from where they lie, see [`GroupBytes`]), kept from one
    /// commit to the next: a fresh multi-MiB buffer per commit is fresh pages,
    /// each faulted in and zeroed by the kernel before the records are copied over
    /// them. Not kept above [`Writer::retained_buffer_bytes`].
    buffer: Vec<u8>,
    /// Held (locked) for the writer's lifetime.
    _lock: File,
}

/// An incremental compaction of one sealed segment.
struct Compaction {
    segment_id: u64,
    path: PathBuf,
    file: File,
    /// The records that were live when the compaction started, in file order, with
    /// their kind and position; each is copied only if it is still live when its
    /// turn comes (a sealed segment gains no records, so nothing is missed).
    pending: std::collections::VecDeque<(RecordLoc, u8, u64)>,
}

struct ActiveSegment {
    path: PathBuf,
    file: File,
    size_bytes: u64,
    /// The file's length: zeros from `size_bytes` up to here (the runway).
    /// `u64::MAX` once writing zeros failed: the length is unknown, so the roll
    /// cuts the file to its records.
    zeroed_to: u64,
    /// Bytes below this offset were made durable and dropped from the page cache.
    uncached_below: u64,
}

impl ActiveSegment {
    /// Drops the durable, whole pages written since the last call from the page
    /// cache. The log's records are read back only on open and by compaction, so
    /// keeping them cached only holds memory; handing the pages back at once lets
    /// the next writes reuse them instead of taking fresh ones (which, on a VM,
    /// costs a host fault per page: a cold catch-up wrote at ~200 MB/s, a warm one
    /// at ~1 GB/s). Call only after an fdatasync: dirty pages are not dropped.
    fn drop_durable_pages(&mut self) {
        const PAGE: u64 = 4096;
        let end = self.size_bytes / PAGE * PAGE;
        if end <= self.uncached_below {
            return;
        }
        advise_dont_need(&self.file, self.uncached_below, end - self.uncached_below);
        self.uncached_below = end;
    }
}

/// A hint only: failure changes nothing but memory use.
fn advise_dont_need(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the call's duration; the call reads no
    // memory of ours.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED);
    }
}

impl Writer {
    fn run(&mut self, mut receiver: mpsc::Receiver<Request>, active: ActiveSegment) {
        let mut active = Some(active);
        let mut group: Vec<Request> = Vec::new();
        while let Some(first) = receiver.blocking_recv() {
            let mut group_bytes = batch_bytes(&first.batch);
            group.push(first);
            while group_bytes < self.options.max_group_bytes {
                match receiver.try_recv() {
                    Ok(request) => {
                        group_bytes += batch_bytes(&request.batch);
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            // Compaction copies ride along with the group, ahead of its batches and
            // under its fdatasync, bounded so that no group waits for much of it.
            let budget = self
                .options
                .compaction_step_bytes
                .max(group_bytes.saturating_mul(2)) as u64;
            let result = match (&self.poisoned, active.as_mut()) {
                (None, Some(active)) => self.compaction_copies(budget).and_then(|copies| {
                    self.commit_group(active, copies.as_ref(), &group)?;
                    Ok(copies.map_or(0, |copies| batch_bytes(&copies) as u64))
                }),
                (reason, _) => Err(reason.clone().unwrap_or_else(|| "no active segment".into())),
            };
            match result {
                Ok(copied) => {
                    self.stats
                        .compaction_bytes_copied
                        .fetch_add(copied, Ordering::Relaxed);
                    self.stats
                        .max_compaction_bytes_per_commit
                        .fetch_max(copied, Ordering::Relaxed);
                    for request in group.drain(..) {
                        let _ = request.done.send(Ok(()));
                    }
                    if let Some(active) = active.as_mut() {
                        active.drop_durable_pages();
                    }
                    if let Err(error) = self.reclaim_space() {
                        self.poisoned = Some(error);
                    }
                }
                Err(reason) => {
                    tracing::error!(dir = %self.dir.display(), %reason, "write-ahead log write failed");
                    self.poisoned = Some(reason.clone());
                    for request in group.drain(..) {
                        let _ = request.done.send(Err(WalError::Poisoned {
                            path: self.dir.clone(),
                            reason: reason.clone(),
                        }));
                    }
                }
            }
        }
    }

    fn open_active(&mut self) -> Result<ActiveSegment, WalError> {
        let existing = self
            .state
            .segments
            .last_key_value()
            .map(|(&id, space)| (id, space.size_bytes));
        match existing {
            Some((segment_id, size_bytes)) if size_bytes >= SEGMENT_HEADER_BYTES as u64 => {
                let path = segment_path(&self.dir, segment_id);
                let io_err = |context| io_error(&path, context);
                // Not O_APPEND: records go at `size_bytes`, over the runway's zeros
                // that replay found after them.
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("opening the active segment"))?;
                let file_len = file
                    .metadata()
                    .map_err(io_err("reading the active segment's length"))?
                    .len();
                Ok(ActiveSegment {
                    path,
                    file,
                    size_bytes,
                    zeroed_to: file_len.max(size_bytes),
                    uncached_below: 0,
                })
            }
            // No segment yet, or a last segment whose header was torn: (re)create.
            Some((segment_id, _)) => self.create_segment(segment_id),
            None => self.create_segment(1),
        }
    }

    fn create_segment(&mut self, segment_id: u64) -> Result<ActiveSegment, WalError> {
        let path = segment_path(&self.dir, segment_id);
        let io_err = |context| io_error(&path, context);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err("creating a segment"))?;
        file.write_all(&segment_header(segment_id))
            .map_err(io_err("writing a segment header"))?;
        file.sync_all().map_err(io_err("syncing a new segment"))?;
        self.stats.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        sync_dir(&self.dir)?;
        drop(file);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err("opening a new segment"))?;
        self.state.segments.insert(
            segment_id,
            SegmentSpace {
                size_bytes: SEGMENT_HEADER_BYTES as u64,
                live_bytes: 0,
            },
        );
        self.state.active_segment_id = segment_id;
        Ok(ActiveSegment {
            path,
            file,
            size_bytes: SEGMENT_HEADER_BYTES as u64,
            zeroed_to: SEGMENT_HEADER_BYTES as u64,
            uncached_below: 0,
        })
    }

    /// Writes the compaction copies (if any), then every batch of the group,
    /// fdatasyncs, then updates the index. Errors are strings because each waiter
    /// gets its own copy.
    fn commit_group<'a>(
        &mut self,
        active: &mut ActiveSegment,
        copies: Option<&'a WriteBatch>,
        group: &'a [Request],
    ) -> Result<(), String> {
        // Sized once for the whole group, so it never reallocates (and copies) as
        // batches are appended; a roll only flushes it, keeping the capacity. The
        // previous commit's buffer is reused (see `Writer::buffer`). Large values
        // are not copied into it (see `gather`), so this may reserve more than is
        // used; unused capacity is never touched, so it costs no pages.
        let group_bytes: usize = copies
            .into_iter()
            .chain(group.iter().map(|r| &r.batch))
            .map(batch_bytes)
            .sum();
        let mut buffer = GroupBytes::new(std::mem::take(&mut self.buffer));
        buffer.reserve_copied(group_bytes);
        // (segment id, offset, kind, position) of every record, applied after sync.
        let mut written: Vec<(RecordLoc, u8, u64)> = Vec::new();
        for batch in copies.into_iter().chain(group.iter().map(|r| &r.batch)) {
            for op in &batch.ops {
                let payload_bytes = op.payload_len();
                if payload_bytes > MAX_RECORD_PAYLOAD_BYTES {
                    // Refuse the whole group rather than half of it: simpler, and a
                    // record this size is a bug in the caller.
                    return Err(WalError::RecordTooLarge {
                        path: self.dir.clone(),
                        payload_bytes,
                    }
                    .to_string());
                }
            }
            if batch.is_empty() {
                continue;
            }
            // What `encode_batch_into` appends, exactly: headers plus payloads.
            let encoded_bytes = batch_bytes(batch);
            let projected = active.size_bytes + buffer.len() as u64 + encoded_bytes as u64;
            if projected > self.options.segment_size_bytes
                && active.size_bytes + buffer.len() as u64 > SEGMENT_HEADER_BYTES as u64
            {
                self.flush(active, &mut buffer)?;
                self.roll(active)?;
            }
            let base = active.size_bytes + buffer.len() as u64;
            let mut offset = 0usize;
            for op in &batch.ops {
                let (kind, position) = match op {
                    WalOp::Meta(_) => (KIND_META, 0),
                    WalOp::Put { position, .. } | WalOp::PutParts { position, .. } => {
                        (KIND_PUT, *position)
                    }
                    WalOp::TruncateBelow(bound) => (KIND_TRUNCATE, *bound),
                };
                let record_bytes = (RECORD_HEADER_BYTES + op.payload_len()) as u64;
                written.push((
                    RecordLoc {
                        segment_id: self.state.active_segment_id,
                        offset: base + offset as u64,
                        record_bytes,
                    },
                    kind,
                    position,
                ));
                offset += record_bytes as usize;
            }
            // Straight into the group's bytes: no per-batch buffer to copy from.
            encode_batch_into(&mut buffer, batch);
        }
        self.flush(active, &mut buffer)?;
        self.extend_runway(active, group_bytes);
        active
            .file
            .sync_data()
            .map_err(|e| format!("fdatasync of {}: {e}", active.path.display()))?;
        self.stats.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        self.stats.group_commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .batches_written
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        for (loc, kind, position) in written {
            self.apply_written(loc, kind, position);
        }
        let buffer = buffer.into_buffer();
        if buffer.capacity() <= self.retained_buffer_bytes() {
            self.buffer = buffer;
        }
        Ok(())
    }

    /// The largest write buffer kept for the next commit: a group stops taking
    /// batches at `max_group_bytes` but may overshoot by one batch, and carries
    /// compaction copies too; twice the bound covers the groups of a steady bulk
    /// load. A buffer grown by one larger group is freed rather than held.
    fn retained_buffer_bytes(&self) -> usize {
        self.options.max_group_bytes.saturating_mul(2)
    }

    fn apply_written(&mut self, loc: RecordLoc, kind: u8, position: u64) {
        if let Some(space) = self.state.segments.get_mut(&loc.segment_id) {
            space.size_bytes = space.size_bytes.max(loc.offset + loc.record_bytes);
        }
        match kind {
            KIND_META => self.state.set_meta(loc),
            KIND_PUT => {
                if !self.state.set_position(position, loc) {
                    self.stats
                        .puts_below_truncation_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    // The record is on disk but dead: replay drops it the same way.
                }
            }
            _ => self.state.truncate_below(position, loc),
        }
    }

    fn flush(
        &mut self,
        active: &mut ActiveSegment,
        buffer: &mut GroupBytes<'_>,
    ) -> Result<(), String> {
        if buffer.is_empty() {
            return Ok(());
        }
        buffer
            .write_all_at(&active.file, active.size_bytes)
            .map_err(|e| format!("write to {}: {e}", active.path.display()))?;
        active.size_bytes += buffer.len() as u64;
        active.zeroed_to = active.zeroed_to.max(active.size_bytes);
        self.stats
            .bytes_appended
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        buffer.clear();
        Ok(())
    }

    /// Tops up the zeros ahead of the records after a small commit (see
    /// [`WalOptions::runway_bytes`]); they become durable with its fdatasync.
    /// Best effort: zeros that cannot be written (a full disk) only cost speed,
    /// so the commit goes on without them.
    fn extend_runway(&mut self, active: &mut ActiveSegment, commit_bytes: usize) {
        let runway = self.options.runway_bytes;
        if runway == 0
            || commit_bytes as u64 >= runway / 4
            || active.zeroed_to >= active.size_bytes.saturating_add(runway / 2)
        {
            return;
        }
        // Not past the segment's size: the zeros would be cut at the roll anyway.
        let target = (active.size_bytes + runway).min(self.options.segment_size_bytes);
        let mut at = active.zeroed_to;
        while at < target {
            let chunk = (target - at).min(ZERO_CHUNK.len() as u64) as usize;
            if let Err(error) = active.file.write_all_at(&ZERO_CHUNK[..chunk], at) {
                tracing::warn!(
                    path = %active.path.display(),
                    %error,
                    "write-ahead log: cannot write zeros ahead of the records; going on without"
                );
                // The file may have grown by part of a chunk: the roll must cut
                // it, and this segment is not tried again.
                active.zeroed_to = u64::MAX;
                return;
            }
            at += chunk as u64;
        }
        if at > active.zeroed_to {
            self.stats
                .runway_bytes_zeroed
                .fetch_add(at - active.zeroed_to, Ordering::Relaxed);
            active.zeroed_to = at;
        }
    }

    /// Seals the active segment (durably, cut to its records) and starts the next
    /// one.
    fn roll(&mut self, active: &mut ActiveSegment) -> Result<(), String> {
        if active.zeroed_to > active.size_bytes {
            // Replay accepts zeros after the records only in the last segment; the
            // new length must be durable before a segment follows this one.
            active
                .file
                .set_len(active.size_bytes)
                .and_then(|()| active.file.sync_all())
                .map_err(|e| format!("cutting the runway of {}: {e}", active.path.display()))?;
            active.zeroed_to = active.size_bytes;
        } else {
            active
                .file
                .sync_data()
                .map_err(|e| format!("fdatasync of {}: {e}", active.path.display()))?;
        }
        self.stats.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        let sealed_bytes = active.size_bytes;
        advise_dont_need(&active.file, 0, sealed_bytes);
        let next = self.state.active_segment_id + 1;
        *active = self.create_segment(next).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Deletes sealed segments without live records: those whose records were all
    /// overwritten or truncated, and the segment under compaction once its last
    /// live record was copied. Runs after the group's fdatasync, so every copy is
    /// durable before its original goes, and after the waiters were completed.
    fn reclaim_space(&mut self) -> Result<(), String> {
        let empty: Vec<u64> = self
            .state
            .segments
            .iter()
            .filter(|(&id, space)| id != self.state.active_segment_id && space.live_bytes == 0)
            .map(|(&id, _)| id)
            .collect();
        for segment_id in empty {
            self.delete_segment(segment_id)?;
            if self
                .compaction
                .as_ref()
                .is_some_and(|compaction| compaction.segment_id == segment_id)
            {
                self.compaction = None;
                self.stats
                    .segments_compacted
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn delete_segment(&mut self, segment_id: u64) -> Result<(), String> {
        debug_assert_ne!(segment_id, self.state.active_segment_id);
        let path = segment_path(&self.dir, segment_id);
        fs::remove_file(&path).map_err(|e| format!("deleting {}: {e}", path.display()))?;
        sync_dir(&self.dir).map_err(|e| e.to_string())?;
        self.state.segments.remove(&segment_id);
        self.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Starts compacting the oldest sealed segment where garbage dominates, if none
    /// is under way. Collecting its live records walks the index once per
    /// compaction, not once per step.
    fn start_compaction(&mut self) -> Result<(), String> {
        // A compaction with nothing left pending has copied everything: its segment
        // was deleted after the last step's fdatasync. Should its live bytes not
        // have reached zero (an accounting bug), it is collected afresh below rather
        // than blocking every later compaction.
        if self.compaction.as_ref().is_some_and(|compaction| {
            !compaction.pending.is_empty()
                && self.state.segments.contains_key(&compaction.segment_id)
        }) {
            return Ok(());
        }
        self.compaction = None;
        let candidate = self.state.segments.iter().find(|(&id, space)| {
            id != self.state.active_segment_id
                && space.live_bytes > 0
                && space.size_bytes > space.live_bytes.saturating_mul(COMPACTION_GARBAGE_RATIO)
        });
        let Some((&segment_id, _)) = candidate else {
            return Ok(());
        };
        let mut pending: Vec<(RecordLoc, u8, u64)> = self
            .state
            .positions
            .iter()
            .filter(|(_, loc)| loc.segment_id == segment_id)
            .map(|(&position, &loc)| (loc, KIND_PUT, position))
            .chain(
                self.state
                    .meta
                    .filter(|loc| loc.segment_id == segment_id)
                    .map(|loc| (loc, KIND_META, 0)),
            )
            .chain(
                self.state
                    .truncate
                    .filter(|loc| loc.segment_id == segment_id)
                    .map(|loc| (loc, KIND_TRUNCATE, self.state.truncated_below)),
            )
            .collect();
        // File order, so the copies keep the records' relative order.
        pending.sort_by_key(|(loc, _, _)| loc.offset);
        let path = segment_path(&self.dir, segment_id);
        let file = File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        self.compaction = Some(Compaction {
            segment_id,
            path,
            file,
            pending: pending.into(),
        });
        Ok(())
    }

    /// Is the record at `loc` still the live one for its kind and position?
    fn is_live(&self, loc: RecordLoc, kind: u8, position: u64) -> bool {
        match kind {
            KIND_META => self.state.meta == Some(loc),
            KIND_PUT => self.state.positions.get(&position) == Some(&loc),
            _ => self.state.truncate == Some(loc),
        }
    }

    /// The next step of the compaction under way (starting one if a segment needs
    /// it): byte-identical copies, as one batch, of the segment's next records that
    /// are live now, at most `budget` bytes of them (at least one record). Written
    /// ahead of the group's own batches, so any newer write of a copied position in
    /// the same group lands after its copy and wins on replay, as it does in the
    /// index. A record that died since the compaction started (overwritten or
    /// truncated) is skipped, so replay cannot resurrect it. A crash at any point
    /// leaves originals and durable copies of the same live bytes: replay applies
    /// the original, then the identical copy, and ends in the same state.
    fn compaction_copies(&mut self, budget: u64) -> Result<Option<WriteBatch>, String> {
        self.start_compaction()?;
        let Some(mut compaction) = self.compaction.take() else {
            return Ok(None);
        };
        let span_limit = budget.saturating_mul(COMPACTION_READ_SPAN_FACTOR);
        let mut chosen: Vec<(RecordLoc, u8, u64)> = Vec::new();
        let mut chosen_bytes = 0u64;
        while let Some(&(loc, kind, position)) = compaction.pending.front() {
            if !self.is_live(loc, kind, position) {
                compaction.pending.pop_front();
                continue;
            }
            if let Some((first, _, _)) = chosen.first() {
                let span = loc.offset + loc.record_bytes - first.offset;
                if chosen_bytes + loc.record_bytes > budget || span > span_limit {
                    break;
                }
            }
            chosen_bytes += loc.record_bytes;
            chosen.push((loc, kind, position));
            compaction.pending.pop_front();
        }
        let result = read_copies(&compaction, &chosen);
        // Kept even when `pending` is empty: it ends when the segment is deleted.
        self.compaction = Some(compaction);
        let batch = result?;
        Ok((!batch.is_empty()).then_some(batch))
    }
}

/// Reads the records `chosen` (in file order) of the segment under compaction in
/// one span and returns them as a batch of byte-identical ops, checking each one's
/// checksums, kind and position against the index.
fn read_copies(
    compaction: &Compaction,
    chosen: &[(RecordLoc, u8, u64)],
) -> Result<WriteBatch, String> {
    use std::os::unix::fs::FileExt;
    let mut batch = WriteBatch::new();
    let (Some((first, _, _)), Some((last, _, _))) = (chosen.first(), chosen.last()) else {
        return Ok(batch);
    };
    let span_bytes = (last.offset + last.record_bytes - first.offset) as usize;
    let mut span = vec![0; span_bytes];
    compaction
        .file
        .read_exact_at(&mut span, first.offset)
        .map_err(|e| format!("reading {} for compaction: {e}", compaction.path.display()))?;
    for &(loc, kind, position) in chosen {
        let start = (loc.offset - first.offset) as usize;
        let corrupt = |reason: &str| {
            WalError::Corrupt {
                path: compaction.path.clone(),
                offset: loc.offset,
                position: (kind == KIND_PUT).then_some(position),
                reason: reason.into(),
            }
            .to_string()
        };
        let end = start + loc.record_bytes as usize;
        // Never copy what does not check out: stop writing instead.
        let Scan::Record(record) = scan_record(&span[start..end]) else {
            return Err(corrupt("live record failed its checksum during compaction"));
        };
        if record.record_bytes as u64 != loc.record_bytes
            || record.kind != kind
            || (kind != KIND_META && record.position != position)
        {
            return Err(corrupt(
                "live record differs from the index during compaction",
            ));
        }
        batch.ops.push(match kind {
            KIND_META => WalOp::Meta(record.payload.to_vec()),
            KIND_PUT => WalOp::Put {
                position,
                bytes: record.payload.to_vec(),
            },
            _ => WalOp::TruncateBelow(position),
        });
    }
    Ok(batch)
}

fn batch_bytes(batch: &WriteBatch) -> usize {
    batch
        .ops
        .iter()
        .map(|op| RECORD_HEADER_BYTES + op.payload_len())
        .sum()
}

/// Appends the records of `batch` to `out`: [`batch_bytes`] bytes.
fn encode_batch_into<'a>(out: &mut GroupBytes<'a>, batch: &'a WriteBatch) {
    let last = batch.ops.len().saturating_sub(1);
    for (index, op) in batch.ops.iter().enumerate() {
        let end = index == last;
        match op {
            WalOp::Meta(bytes) => encode_record(out, KIND_META, end, 0, &[bytes]),
            WalOp::Put { position, bytes } => {
                encode_record(out, KIND_PUT, end, *position, &[bytes])
            }
            WalOp::PutParts { position, parts } => {
                encode_record(out, KIND_PUT, end, *position, &parts.pieces())
            }
            WalOp::TruncateBelow(bound) => encode_record(out, KIND_TRUNCATE, end, *bound, &[]),
        }
    }
}

/// Wraps an I/O error of `path` with what was being done.
fn io_error(path: &Path, context: &'static str) -> impl FnOnce(io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io {
        path,
        context,
        source,
    }
}

/// Makes creations and deletions of segment files durable.
fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WalError::Io {
            path: dir.to_path_buf(),
            context: "syncing the directory",
            source,
        })
}

mod gather;
#[cfg(test)]
mod tests;
