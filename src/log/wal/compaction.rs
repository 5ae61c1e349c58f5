//! Reclaiming space (see "Space" in the [`wal`](super) module documentation):
//! deleting sealed segments without live records, and compacting, a step per group
//! commit, the oldest sealed segment where garbage dominates.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::format::{scan_record, segment_path, Scan, KIND_META, KIND_PUT, KIND_TRUNCATE};
use super::space::RecordLoc;
use super::writer::Writer;
use super::{sync_dir, WalError, WalOp, WriteBatch};

/// A sealed segment is compacted when its size is more than this many times its live
/// bytes (garbage dominates).
pub const COMPACTION_GARBAGE_RATIO: u64 = 2;
/// One compaction step reads its records in one span of the segment; the span may
/// hold garbage between them, but never more than this many times the step's bytes
/// (the step stops early instead), so sparse live records cannot make one step read
/// a whole segment.
pub(super) const COMPACTION_READ_SPAN_FACTOR: u64 = 4;

/// An incremental compaction of one sealed segment.
pub(super) struct Compaction {
    segment_id: u64,
    path: PathBuf,
    file: File,
    /// The records that were live when the compaction started, in file order, with
    /// their kind and position; each is copied only if it is still live when its
    /// turn comes (a sealed segment gains no records, so nothing is missed).
    pending: VecDeque<(RecordLoc, u8, u64)>,
}

impl Writer {
    /// Deletes sealed segments without live records: those whose records were all
    /// overwritten or truncated, and the segment under compaction once its last
    /// live record was copied. Runs after the group's fdatasync, so every copy is
    /// durable before its original goes, and after the waiters were completed.
    pub(super) fn reclaim_space(&mut self) -> Result<(), String> {
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
    pub(super) fn compaction_copies(&mut self, budget: u64) -> Result<Option<WriteBatch>, String> {
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
pub(super) fn read_copies(
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
