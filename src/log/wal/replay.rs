//! Replay: reading the segments back on open (see "Recovery" in the
//! [`wal`](super) module documentation), telling a torn tail (cut) from corruption
//! (refused).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::format::{
    list_segments, scan_record, segment_header, Decoded, Scan, KIND_META, KIND_PUT, KIND_TRUNCATE,
    SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_SUFFIX,
};
use super::space::{RecordLoc, SegmentSpace, State};
use super::{Recovered, TornTail, WalError};

pub(super) fn replay(dir: &Path) -> Result<(State, Recovered), WalError> {
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
pub(super) fn replay_segment(
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

pub(super) fn apply_replayed(
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
