//! The registry: the state a Mesos master keeps durable (the writing master, the
//! agents admitted, unreachable and gone, the maintenance schedule, quotas and
//! weights), as a pure, deterministic state machine fed by log entries.
//!
//! An entry is either a [`Entry::Batch`] of operations (many clients' writes in one
//! log append) or a [`Entry::Snapshot`] of the whole registry. Operations are
//! validated before they are appended ([`Registry::validate`], against the registry
//! plus the [`Pending`] operations ahead of them); [`Registry::apply`] re-checks each
//! operation and leaves the registry untouched when it no longer holds (a batch
//! ahead of it may have failed), so applying never fails and every member computes
//! the same registry from the same entries.
//!
//! Unlike Mesos, which rewrites the whole registry on every store, a store here
//! appends only its operations; the whole registry is written only in the occasional
//! snapshot (see `registrar.rs` for when).
//!
//! A snapshot is written as consecutive *chunk* entries ([`encode_snapshot_chunks`]),
//! each at most [`SNAPSHOT_CHUNK_BYTES`] of the encoded snapshot, so that no log
//! entry, and no message of the log carrying many entries, comes near the 16 MiB
//! frame limit however large the registry grows (a 50,000-agent registry is ~16 MB).
//! The machine reassembles them and applies the snapshot only once every chunk of
//! the same snapshot arrived, in order, with nothing in between, and the whole
//! matches its length and checksum: a snapshot whose writer lost the lead half-way
//! is ignored by every member alike, never restored from.
//!
//! # Where things are
//!
//! `model` holds the types (the registry, its records, the operations);
//! `operations` validates and applies operations; `codec` encodes and decodes log
//! entries; `chunks` splits a snapshot into chunk entries and reads one back;
//! `machine` is the state machine fed by entries (snapshot reassembly and
//! acceptance); `import` stages an imported registry until its last chunk.

pub use chunks::{
    decode_chunk, encode_snapshot_chunks, ChunkHeader, ChunkingError, MAX_SNAPSHOT_CHUNKS,
    SNAPSHOT_CHUNK_BYTES, SNAPSHOT_CHUNK_TAG,
};
pub use codec::{decode_entry, encode_batch, encode_snapshot, CorruptEntry, Entry, ENTRY_VERSION};
pub use machine::{Applied, RegistryMachine};
pub use model::{
    AgentLocation, AgentRecord, DurationInfo, MachineId, MaintenanceSchedule, MaintenanceWindow,
    MasterRecord, Operation, QuotaConfig, Ranges, Registry, Resource, Scalar, TimeInfo,
    Unavailability, ValueRange, ValueSet, ValueType, WeightInfo,
};
pub use operations::{
    OperationError, Pending, MAX_MAINTENANCE_MACHINES, MAX_MAINTENANCE_WINDOWS, MAX_NAME_BYTES,
    MAX_QUOTA_RESOURCES, MAX_RESOURCES_PER_AGENT, MAX_ROLES_PER_UPDATE, MAX_VALUES_PER_RESOURCE,
};

mod chunks;
mod codec;
mod import;
mod machine;
mod model;
mod operations;
#[cfg(test)]
pub(crate) mod tests;
