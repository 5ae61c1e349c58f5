//! The encoding of log entries: a version byte, then JSON. Every older version
//! stays readable.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::model::{Operation, Registry};

/// First byte of every entry. Bump it when the encoding changes, and keep decoding
/// every older version: a log written by an older master must stay readable.
pub const ENTRY_VERSION: u8 = 1;

/// Why an entry cannot be read: the log is corrupt or was written by a newer master.
/// Never skipped: a member that skipped an entry would diverge from the others.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("registry entry at position {position} is unreadable: {reason}")]
pub struct CorruptEntry {
    pub position: u64,
    pub reason: String,
}

/// A log entry as decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// Operations of many clients, applied in order. `writer` and `seq` let the
    /// registrar that appended it find the clients waiting for it.
    Batch {
        writer: u64,
        seq: u64,
        ops: Vec<Operation>,
    },
    /// The whole registry as it was after the entry at `base_position` (the last
    /// batch or snapshot the writer had applied); `None` for an empty log.
    Snapshot {
        writer: u64,
        seq: u64,
        base_position: Option<u64>,
        registry: Registry,
    },
}

/// The encoding side of [`Entry::Snapshot`], borrowing the registry rather than
/// copying 50,000 agents; it must serialize exactly as `Entry` does.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum EntryRef<'a> {
    Snapshot {
        writer: u64,
        seq: u64,
        base_position: Option<u64>,
        registry: &'a Registry,
    },
}

fn encode_versioned(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = vec![ENTRY_VERSION];
    // Serializing these types to a Vec cannot fail: every map key is a string and
    // validation keeps every float finite.
    if let Err(err) = serde_json::to_writer(&mut bytes, value) {
        unreachable!("registry entries always serialize: {err}");
    }
    bytes
}

/// Encodes a batch entry.
pub fn encode_batch(writer: u64, seq: u64, ops: Vec<Operation>) -> Vec<u8> {
    encode_versioned(&Entry::Batch { writer, seq, ops })
}

/// Encodes a snapshot entry of `registry`.
pub fn encode_snapshot(
    writer: u64,
    seq: u64,
    base_position: Option<u64>,
    registry: &Registry,
) -> Vec<u8> {
    encode_versioned(&EntryRef::Snapshot {
        writer,
        seq,
        base_position,
        registry,
    })
}

/// Decodes the entry at `position`.
pub fn decode_entry(position: u64, bytes: &[u8]) -> Result<Entry, CorruptEntry> {
    let corrupt = |reason: String| CorruptEntry { position, reason };
    match bytes.split_first() {
        None => Err(corrupt("empty entry".to_owned())),
        Some((&ENTRY_VERSION, body)) => {
            serde_json::from_slice(body).map_err(|err| corrupt(err.to_string()))
        }
        Some((version, _)) => Err(corrupt(format!(
            "unknown entry version {version} (this master reads version {ENTRY_VERSION}); \
             was the log written by a newer master?"
        ))),
    }
}

/// The writer, seq and base position of an encoded snapshot entry, without
/// decoding its registry (only called on bytes this member encoded itself).
pub(super) fn decode_snapshot_base(
    position: u64,
    bytes: &[u8],
) -> Result<(u64, u64, Option<u64>), CorruptEntry> {
    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Frame {
        Snapshot {
            writer: u64,
            seq: u64,
            base_position: Option<u64>,
            #[allow(dead_code)]
            registry: serde::de::IgnoredAny,
        },
    }
    let corrupt = |reason: String| CorruptEntry { position, reason };
    match bytes.split_first() {
        Some((&ENTRY_VERSION, body)) => match serde_json::from_slice::<Frame>(body) {
            Ok(Frame::Snapshot {
                writer,
                seq,
                base_position,
                ..
            }) => Ok((writer, seq, base_position)),
            Err(err) => Err(corrupt(err.to_string())),
        },
        _ => Err(corrupt("not a version-1 snapshot".to_owned())),
    }
}
