//! The on-disk record format (see "On-disk format" in the [`wal`](super) module
//! documentation): segment files and their headers, encoding batches into records
//! and decoding one record back, checksums checked. No I/O beyond listing the
//! directory's segments.

use std::fs;
use std::path::{Path, PathBuf};

use super::gather::GroupBytes;
use super::{WalError, WalOp, WriteBatch};

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

pub(super) const KIND_META: u8 = 1;
pub(super) const KIND_PUT: u8 = 2;
pub(super) const KIND_TRUNCATE: u8 = 3;
pub(super) const FLAG_END_OF_BATCH: u8 = 0x01;
pub(super) const KNOWN_FLAGS: u8 = FLAG_END_OF_BATCH;
pub(super) const SEGMENT_SUFFIX: &str = ".wal";

/// Appends one record whose payload is the concatenation of `payload`'s pieces.
pub(super) fn encode_record<'a>(
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

pub(super) fn segment_path(dir: &Path, segment_id: u64) -> PathBuf {
    dir.join(format!("{segment_id:020}{SEGMENT_SUFFIX}"))
}

pub(super) fn segment_header(segment_id: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0; SEGMENT_HEADER_BYTES];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..].copy_from_slice(&segment_id.to_le_bytes());
    header
}

pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
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

pub(super) fn batch_bytes(batch: &WriteBatch) -> usize {
    batch
        .ops
        .iter()
        .map(|op| RECORD_HEADER_BYTES + op.payload_len())
        .sum()
}

/// Appends the records of `batch` to `out`: [`batch_bytes`] bytes.
pub(super) fn encode_batch_into<'a>(out: &mut GroupBytes<'a>, batch: &'a WriteBatch) {
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

/// A record decoded during replay.
pub(super) struct Decoded<'a> {
    pub(super) kind: u8,
    pub(super) end_of_batch: bool,
    pub(super) position: u64,
    pub(super) payload: &'a [u8],
    pub(super) record_bytes: usize,
}

pub(super) enum Scan<'a> {
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

pub(super) fn scan_record(bytes: &[u8]) -> Scan<'_> {
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
