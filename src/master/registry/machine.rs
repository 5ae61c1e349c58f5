//! The registry state machine: the registry plus what replaying the log needs to
//! know, fed the learned entries in position order; it reassembles chunked
//! snapshots and accepts a snapshot only when it follows the entries applied.

use std::sync::Arc;

use super::chunks::{
    decode_chunk, Assembly, MAX_SNAPSHOT_CHUNKS, SNAPSHOT_CHUNK_BYTES, SNAPSHOT_CHUNK_TAG,
};
use super::codec::{decode_entry, decode_snapshot_base, CorruptEntry, Entry};
use super::import::StagedImport;
use super::model::Registry;
use super::operations::OperationError;

/// What applying one entry did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Batch {
        writer: u64,
        seq: u64,
        outcomes: Vec<Result<(), OperationError>>,
    },
    Snapshot {
        writer: u64,
        seq: u64,
        /// False when the snapshot missed entries written after its base (its
        /// writer lost the lead meanwhile): it is ignored, on every member alike.
        accepted: bool,
        /// Where the snapshot begins in the log (its first chunk): the log may be
        /// truncated below it once it is accepted.
        first_position: u64,
    },
    /// A chunk of a snapshot not complete yet (or an orphan one, ignored): nothing
    /// changed in the registry.
    SnapshotChunk { writer: u64, seq: u64 },
}

/// The registry plus what replaying the log needs to know: where the last entry
/// was and how much log has accumulated since the last snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryMachine {
    /// Shared so a snapshot can be encoded without holding the registrar's lock;
    /// applying copies it only if such an encoding still holds it.
    pub(super) registry: Arc<Registry>,
    /// Position of the last batch or accepted snapshot applied.
    pub(super) last_entry_position: Option<u64>,
    /// Position of the last accepted snapshot.
    pub(super) snapshot_position: Option<u64>,
    pub(super) snapshot_bytes: u64,
    pub(super) operations_since_snapshot: u64,
    pub(super) bytes_since_snapshot: u64,
    /// The chunked snapshot whose chunks are arriving.
    pub(super) assembly: Option<Assembly>,
    /// The import whose chunks are being applied, not yet visible. Not part of
    /// snapshots: an accepted snapshot drops it on every member alike, and the
    /// import's later chunks are then refused everywhere.
    pub(super) staged_import: Option<StagedImport>,
}

impl RegistryMachine {
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry as it is now, to read (encode) without borrowing the machine.
    pub fn shared_registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    pub fn last_entry_position(&self) -> Option<u64> {
        self.last_entry_position
    }

    pub fn snapshot_position(&self) -> Option<u64> {
        self.snapshot_position
    }

    pub fn operations_since_snapshot(&self) -> u64 {
        self.operations_since_snapshot
    }

    pub fn bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot
    }

    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes
    }

    /// Bytes of log the registry needs: its latest snapshot plus everything since.
    pub fn log_bytes(&self) -> u64 {
        self.snapshot_bytes + self.bytes_since_snapshot
    }

    /// Applies the learned entry at `position`. Entries must come in increasing
    /// position order (gaps are the log's Nop and Truncate positions).
    pub fn apply_entry(&mut self, position: u64, bytes: &[u8]) -> Result<Applied, CorruptEntry> {
        self.apply_entry_known(position, bytes, None)
    }

    /// [`RegistryMachine::apply_entry`], where `own_snapshot` is the encoded snapshot
    /// this member is appending from its own registry, if any: when a chunked
    /// snapshot reassembles to exactly these bytes it is applied without decoding
    /// (the registry held is the one it encodes). Same outcome either way.
    pub fn apply_entry_known(
        &mut self,
        position: u64,
        bytes: &[u8],
        own_snapshot: Option<&[u8]>,
    ) -> Result<Applied, CorruptEntry> {
        debug_assert!(
            self.last_entry_position.is_none_or(|last| last < position),
            "entries must be applied in position order"
        );
        if bytes.first() == Some(&SNAPSHOT_CHUNK_TAG) {
            return self.apply_chunk(position, bytes, own_snapshot);
        }
        let entry_bytes = bytes.len() as u64;
        match decode_entry(position, bytes)? {
            Entry::Batch { writer, seq, ops } => {
                self.abandon_assembly(position, "a batch entry came between its chunks");
                let outcomes = ops
                    .iter()
                    .map(|op| self.apply_operation(position, op))
                    .collect();
                self.last_entry_position = Some(position);
                self.operations_since_snapshot += ops.len() as u64;
                self.bytes_since_snapshot += entry_bytes;
                Ok(Applied::Batch {
                    writer,
                    seq,
                    outcomes,
                })
            }
            Entry::Snapshot {
                writer,
                seq,
                base_position,
                registry,
            } => {
                // Written by masters before chunking; still read.
                self.abandon_assembly(position, "a snapshot entry came between its chunks");
                let accepted = self.accept_snapshot(
                    position,
                    position,
                    base_position,
                    entry_bytes,
                    Some(registry),
                );
                Ok(Applied::Snapshot {
                    writer,
                    seq,
                    accepted,
                    first_position: position,
                })
            }
        }
    }

    fn abandon_assembly(&mut self, position: u64, why: &str) {
        if let Some(assembly) = self.assembly.take() {
            tracing::warn!(
                position,
                first_position = assembly.first_position,
                chunks = assembly.next_index,
                count = assembly.header.count,
                why,
                "ignoring a snapshot left incomplete (its writer lost the lead while appending it)"
            );
            self.bytes_since_snapshot += assembly.entry_bytes;
        }
    }

    fn apply_chunk(
        &mut self,
        position: u64,
        bytes: &[u8],
        own_snapshot: Option<&[u8]>,
    ) -> Result<Applied, CorruptEntry> {
        let (header, payload) = decode_chunk(position, bytes)?;
        let entry_bytes = bytes.len() as u64;
        let (writer, seq) = (header.writer, header.seq);
        let continues = self.assembly.as_ref().is_some_and(|assembly| {
            assembly.header.writer == header.writer
                && assembly.header.seq == header.seq
                && assembly.header.count == header.count
                && assembly.header.snapshot_bytes == header.snapshot_bytes
                && assembly.header.snapshot_crc32c == header.snapshot_crc32c
                && assembly.next_index == header.index
        });
        if !continues {
            self.abandon_assembly(position, "a chunk of another snapshot or out of order");
            if header.index != 0 {
                if self.last_entry_position.is_none() {
                    // Truncation only ever follows a whole accepted snapshot, to its
                    // first chunk: a log that begins inside one has lost its prefix.
                    return Err(CorruptEntry {
                        position,
                        reason: format!(
                            "the log begins with chunk {} of {} of a snapshot; its first chunks are missing",
                            header.index, header.count
                        ),
                    });
                }
                self.bytes_since_snapshot += entry_bytes;
                return Ok(Applied::SnapshotChunk { writer, seq });
            }
            // Never trust a length from the log for an allocation beyond what a
            // snapshot may be.
            let capacity = usize::try_from(header.snapshot_bytes)
                .unwrap_or(usize::MAX)
                .min(MAX_SNAPSHOT_CHUNKS * SNAPSHOT_CHUNK_BYTES);
            self.assembly = Some(Assembly {
                header: header.clone(),
                first_position: position,
                next_index: 0,
                bytes: Vec::with_capacity(capacity),
                entry_bytes: 0,
            });
        }
        let Some(assembly) = self.assembly.as_mut() else {
            unreachable!("an assembly was just continued or started");
        };
        assembly.bytes.extend_from_slice(payload);
        assembly.entry_bytes += entry_bytes;
        assembly.next_index += 1;
        if assembly.bytes.len() as u64 > header.snapshot_bytes {
            return Err(CorruptEntry {
                position,
                reason: format!(
                    "snapshot chunks hold more than the {} bytes their header announces",
                    header.snapshot_bytes
                ),
            });
        }
        if assembly.next_index < header.count {
            return Ok(Applied::SnapshotChunk { writer, seq });
        }
        let Some(assembly) = self.assembly.take() else {
            unreachable!("the assembly is complete");
        };
        let corrupt = |reason: String| CorruptEntry { position, reason };
        if assembly.bytes.len() as u64 != header.snapshot_bytes {
            return Err(corrupt(format!(
                "a chunked snapshot of {} bytes where its header announces {}",
                assembly.bytes.len(),
                header.snapshot_bytes
            )));
        }
        if crc32c::crc32c(&assembly.bytes) != header.snapshot_crc32c {
            return Err(corrupt(
                "a chunked snapshot does not match its checksum".to_owned(),
            ));
        }
        let (base_position, registry) = if own_snapshot == Some(assembly.bytes.as_slice()) {
            // Our own encoding of the registry we hold; decode only its frame.
            match decode_snapshot_base(position, &assembly.bytes)? {
                (snapshot_writer, snapshot_seq, base)
                    if (snapshot_writer, snapshot_seq) == (writer, seq) =>
                {
                    (base, None)
                }
                _ => {
                    return Err(corrupt(
                        "a chunked snapshot names another writer inside".to_owned(),
                    ))
                }
            }
        } else {
            match decode_entry(position, &assembly.bytes)? {
                Entry::Snapshot {
                    writer: snapshot_writer,
                    seq: snapshot_seq,
                    base_position,
                    registry,
                } if (snapshot_writer, snapshot_seq) == (writer, seq) => {
                    (base_position, Some(registry))
                }
                _ => {
                    return Err(corrupt(
                        "chunks reassemble to something other than their snapshot".to_owned(),
                    ))
                }
            }
        };
        let accepted = self.accept_snapshot(
            assembly.first_position,
            position,
            base_position,
            assembly.entry_bytes,
            registry,
        );
        Ok(Applied::Snapshot {
            writer,
            seq,
            accepted,
            first_position: assembly.first_position,
        })
    }

    /// `registry` is `None` when it is known to equal the one held. The snapshot
    /// occupies `first_position..=last_position` of the log.
    fn accept_snapshot(
        &mut self,
        first_position: u64,
        last_position: u64,
        base_position: Option<u64>,
        entry_bytes: u64,
        registry: Option<Registry>,
    ) -> bool {
        // A member restoring from a truncated log has applied nothing yet and takes
        // the snapshot as it is (truncation follows only accepted ones).
        let accepted =
            self.last_entry_position.is_none() || self.last_entry_position == base_position;
        if accepted {
            if let Some(registry) = registry {
                debug_assert!(
                    self.last_entry_position.is_none() || *self.registry == registry,
                    "an accepted snapshot equals the registry it was taken from"
                );
                self.registry = Arc::new(registry);
            }
            self.last_entry_position = Some(last_position);
            self.snapshot_position = Some(first_position);
            self.staged_import = None;
            self.snapshot_bytes = entry_bytes;
            self.operations_since_snapshot = 0;
            self.bytes_since_snapshot = 0;
        } else {
            tracing::warn!(
                first_position,
                last_position,
                ?base_position,
                last_entry_position = ?self.last_entry_position,
                "ignoring a snapshot that misses entries after its base"
            );
            self.bytes_since_snapshot += entry_bytes;
        }
        accepted
    }
}
