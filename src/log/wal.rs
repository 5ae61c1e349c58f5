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
//! # Where things are
//!
//! This file is the store's public face (options, batches, the handle, errors).
//! Beside it: `format` (the record and segment layout above, encoding and
//! decoding), `replay` (recovery on open), `space` (the live-bytes index), `writer`
//! (the group-commit thread), `compaction` (deleting and compacting segments) and
//! `gather` (the group's bytes, written with one `pwritev`).
//!
//! # Limits
//!
//! - A bit flip inside the payload of the very last record of the last segment is
//!   indistinguishable from a torn write and is cut as a torn tail (reported).
//! - Dropping the last [`Wal`] handle joins the writer thread; from async code, drop
//!   it on a blocking thread if the queue may be long.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

pub use compaction::COMPACTION_GARBAGE_RATIO;
#[doc(hidden)]
pub use format::encode_segment;
pub use format::{
    MAX_RECORD_PAYLOAD_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
};
#[doc(hidden)]
pub use replay::replay_in_memory;

use format::list_segments;
use writer::{Request, Writer};

/// Default segment size: large enough that rolling is rare, small enough that
/// truncation frees space in useful steps.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of batches that may wait for the writer; senders beyond it wait
/// (backpressure) rather than growing memory without bound.
pub const DEFAULT_QUEUE_CAPACITY_BATCHES: usize = 4096;
/// One group commit writes at most this many bytes before it fdatasyncs, so one
/// flood of writers cannot delay the first waiter without bound.
pub const DEFAULT_MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// Default bytes of live records one group commit copies for compaction (more when
/// the group itself is large; see [`WalOptions::compaction_step_bytes`]). About 4 ms
/// of extra writing on a disk that sustains 250 MB/s, instead of copying a whole
/// segment's live records (~32 MB, 530-660 ms measured) in one commit.
pub const DEFAULT_COMPACTION_STEP_BYTES: usize = 1024 * 1024;
/// Default zeros kept written ahead of the active segment's last record (see
/// [`WalOptions::runway_bytes`]).
pub const DEFAULT_RUNWAY_BYTES: u64 = 1024 * 1024;

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

        let (state, recovered) = replay::replay(dir)?;
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
        let mut writer = Writer::new(dir.to_path_buf(), options, state, stats.clone(), lock);
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

mod compaction;
mod format;
mod gather;
mod replay;
mod space;
#[cfg(test)]
mod tests;
mod writer;
