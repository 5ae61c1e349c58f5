//! The group-commit writer: one thread drains the queue, writes every queued
//! batch (with the compaction step riding along) into the active segment,
//! fdatasyncs once and completes all the waiters; it rolls to a new segment when
//! one is full and keeps the runway of zeros ahead of the records.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::compaction::Compaction;
use super::format::{
    batch_bytes, encode_batch_into, segment_header, segment_path, KIND_META, KIND_PUT,
    KIND_TRUNCATE, MAX_RECORD_PAYLOAD_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use super::gather::GroupBytes;
use super::space::{RecordLoc, SegmentSpace, State};
use super::{io_error, sync_dir, WalError, WalOp, WalOptions, WalStats, WriteBatch};

/// Zeros written per call when the runway is extended.
static ZERO_CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];

type Completion = oneshot::Sender<Result<(), WalError>>;

pub(super) struct Request {
    pub(super) batch: WriteBatch,
    pub(super) done: Completion,
}

pub(super) struct Writer {
    pub(super) dir: PathBuf,
    options: WalOptions,
    pub(super) state: State,
    pub(super) stats: Arc<WalStats>,
    poisoned: Option<String>,
    /// The sealed segment whose live records are being copied, a step per group
    /// commit.
    pub(super) compaction: Option<Compaction>,
    /// The group commit's copy buffer (record headers and small payloads; large
    /// values are written from where they lie, see [`GroupBytes`]), kept from one
    /// commit to the next: a fresh multi-MiB buffer per commit is fresh pages,
    /// each faulted in and zeroed by the kernel before the records are copied over
    /// them. Not kept above [`Writer::retained_buffer_bytes`].
    buffer: Vec<u8>,
    /// Held (locked) for the writer's lifetime.
    _lock: File,
}

pub(super) struct ActiveSegment {
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
    /// The writer of the store in `dir`, starting from the replayed `state`; holds
    /// the directory `lock` for its lifetime.
    pub(super) fn new(
        dir: PathBuf,
        options: WalOptions,
        state: State,
        stats: Arc<WalStats>,
        lock: File,
    ) -> Self {
        Writer {
            dir,
            options,
            state,
            stats,
            poisoned: None,
            compaction: None,
            buffer: Vec::new(),
            _lock: lock,
        }
    }

    pub(super) fn run(&mut self, mut receiver: mpsc::Receiver<Request>, active: ActiveSegment) {
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

    pub(super) fn open_active(&mut self) -> Result<ActiveSegment, WalError> {
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
}
