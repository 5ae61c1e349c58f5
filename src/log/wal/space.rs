//! Space accounting: where each live record is (the current record of each
//! retained position, the latest meta, the latest truncation bound) and how many
//! live bytes each segment holds. Pure bookkeeping shared by replay, which builds
//! it, and the writer, which keeps it current and reclaims segments by it.

use std::collections::BTreeMap;

/// Where a record lives, for space accounting and compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordLoc {
    pub(super) segment_id: u64,
    pub(super) offset: u64,
    pub(super) record_bytes: u64,
}

#[derive(Debug, Default)]
pub(super) struct SegmentSpace {
    pub(super) size_bytes: u64,
    pub(super) live_bytes: u64,
}

/// The writer's view of what is on disk.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) positions: BTreeMap<u64, RecordLoc>,
    pub(super) meta: Option<RecordLoc>,
    pub(super) truncate: Option<RecordLoc>,
    pub(super) truncated_below: u64,
    pub(super) segments: BTreeMap<u64, SegmentSpace>,
    /// The segment appended to (always the last one in `segments`).
    pub(super) active_segment_id: u64,
}

impl State {
    pub(super) fn add_live(&mut self, loc: RecordLoc) {
        if let Some(space) = self.segments.get_mut(&loc.segment_id) {
            space.live_bytes += loc.record_bytes;
        }
    }
    pub(super) fn remove_live(&mut self, loc: RecordLoc) {
        if let Some(space) = self.segments.get_mut(&loc.segment_id) {
            debug_assert!(space.live_bytes >= loc.record_bytes);
            space.live_bytes = space.live_bytes.saturating_sub(loc.record_bytes);
        }
    }
    pub(super) fn set_meta(&mut self, loc: RecordLoc) {
        if let Some(old) = self.meta.replace(loc) {
            self.remove_live(old);
        }
        self.add_live(loc);
    }
    /// Returns false if the put was dropped for being below the truncation point.
    pub(super) fn set_position(&mut self, position: u64, loc: RecordLoc) -> bool {
        if position < self.truncated_below {
            return false;
        }
        if let Some(old) = self.positions.insert(position, loc) {
            self.remove_live(old);
        }
        self.add_live(loc);
        true
    }
    pub(super) fn truncate_below(&mut self, bound: u64, loc: RecordLoc) {
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
