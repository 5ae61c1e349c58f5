//! Snapshot chunks: a snapshot entry split into consecutive chunk entries, each
//! small enough for the log's frames, and one chunk read back.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::codec::CorruptEntry;

/// First byte of a snapshot chunk entry: `[SNAPSHOT_CHUNK_TAG][header length u32 BE]
/// [header JSON][payload]`, the payload being a slice of a version-1 snapshot entry.
/// Raw bytes after a small header, so a chunk costs its size and not 3-4 times it
/// as a JSON array of numbers would.
pub const SNAPSHOT_CHUNK_TAG: u8 = 2;

/// Largest slice of a snapshot in one chunk entry. The log bounds a catch-up or
/// read reply by bytes (`MAX_REPLY_BYTES`, always letting at least one entry
/// through), so a reply holds at most that plus one chunk, which must stay well
/// under the frame limit. `--registry_snapshot_chunk_bytes` may lower it (tests do,
/// to get many chunks from a small registry), never raise it.
pub const SNAPSHOT_CHUNK_BYTES: usize = 128 << 10;

const _: () = assert!(
    crate::log::coordinator::MAX_REPLY_BYTES + SNAPSHOT_CHUNK_BYTES
        <= crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES as usize / 2,
    "a catch-up message full of snapshot chunks must fit a frame with room to spare"
);

/// Most chunks in one snapshot: the log's coordinator queues at most 1,024
/// proposals, and the whole snapshot is proposed at once so nothing lands between
/// its chunks. At the default chunk size that is a 128 MiB registry.
pub const MAX_SNAPSHOT_CHUNKS: usize = 1_024;

/// The header of a snapshot chunk entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    /// The snapshot's writer and sequence number: chunks of one snapshot share them.
    pub writer: u64,
    pub seq: u64,
    /// This chunk's index, from 0, of `count`.
    pub index: u32,
    pub count: u32,
    /// Length and crc32c of the whole encoded snapshot (a version-1 entry).
    pub snapshot_bytes: u64,
    pub snapshot_crc32c: u32,
}

/// Why a snapshot cannot be written as chunks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkingError {
    #[error("a snapshot of {snapshot_bytes} bytes needs {chunks} chunks of {chunk_bytes} bytes, more than the {MAX_SNAPSHOT_CHUNKS} allowed")]
    TooManyChunks {
        snapshot_bytes: usize,
        chunk_bytes: usize,
        chunks: usize,
    },
    #[error("a snapshot chunk must hold 1 to {SNAPSHOT_CHUNK_BYTES} bytes, not {0}")]
    ChunkSize(usize),
}

/// Splits an encoded snapshot entry ([`encode_snapshot`]) into chunk entries of at
/// most `chunk_bytes` of it each, to be appended consecutively.
pub fn encode_snapshot_chunks(
    writer: u64,
    seq: u64,
    snapshot: &[u8],
    chunk_bytes: usize,
) -> Result<Vec<Vec<u8>>, ChunkingError> {
    if chunk_bytes == 0 || chunk_bytes > SNAPSHOT_CHUNK_BYTES {
        return Err(ChunkingError::ChunkSize(chunk_bytes));
    }
    let chunks = snapshot.len().div_ceil(chunk_bytes).max(1);
    if chunks > MAX_SNAPSHOT_CHUNKS {
        return Err(ChunkingError::TooManyChunks {
            snapshot_bytes: snapshot.len(),
            chunk_bytes,
            chunks,
        });
    }
    let snapshot_crc32c = crc32c::crc32c(snapshot);
    let count = chunks as u32; // at most MAX_SNAPSHOT_CHUNKS
    let payloads: Vec<&[u8]> = if snapshot.is_empty() {
        vec![snapshot]
    } else {
        snapshot.chunks(chunk_bytes).collect()
    };
    Ok(payloads
        .into_iter()
        .enumerate()
        .map(|(index, payload)| {
            let header = ChunkHeader {
                writer,
                seq,
                index: index as u32,
                count,
                snapshot_bytes: snapshot.len() as u64,
                snapshot_crc32c,
            };
            let header = match serde_json::to_vec(&header) {
                Ok(header) => header,
                Err(err) => unreachable!("a chunk header always serializes: {err}"),
            };
            let mut entry = Vec::with_capacity(1 + 4 + header.len() + payload.len());
            entry.push(SNAPSHOT_CHUNK_TAG);
            entry.extend_from_slice(&(header.len() as u32).to_be_bytes());
            entry.extend_from_slice(&header);
            entry.extend_from_slice(payload);
            entry
        })
        .collect())
}

/// Splits a chunk entry into its header and payload.
pub fn decode_chunk(position: u64, bytes: &[u8]) -> Result<(ChunkHeader, &[u8]), CorruptEntry> {
    let corrupt = |reason: String| CorruptEntry { position, reason };
    let Some((&SNAPSHOT_CHUNK_TAG, rest)) = bytes.split_first() else {
        return Err(corrupt("not a snapshot chunk".to_owned()));
    };
    let (length, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("snapshot chunk cut short in its header length".to_owned()))?;
    let length = u32::from_be_bytes(*length) as usize;
    if rest.len() < length {
        return Err(corrupt(format!(
            "snapshot chunk header of {length} bytes but only {} bytes follow",
            rest.len()
        )));
    }
    let (header, payload) = rest.split_at(length);
    let header: ChunkHeader = serde_json::from_slice(header)
        .map_err(|err| corrupt(format!("snapshot chunk header: {err}")))?;
    if header.count == 0 || header.index >= header.count {
        return Err(corrupt(format!(
            "snapshot chunk {} of {} is impossible",
            header.index, header.count
        )));
    }
    Ok((header, payload))
}

/// A chunked snapshot being reassembled.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Assembly {
    pub(super) header: ChunkHeader,
    pub(super) first_position: u64,
    pub(super) next_index: u32,
    pub(super) bytes: Vec<u8>,
    /// Log bytes of the chunk entries so far.
    pub(super) entry_bytes: u64,
}
