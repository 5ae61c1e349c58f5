//! The core's [`Storage`] on the checksummed write-ahead store ([`crate::log::wal`]).
//!
//! The WAL stores opaque bytes: one metadata record and one record per position.
//! Here they are the core's [`Metadata`] and [`Entry`] encoded with postcard, so the
//! WAL stays ignorant of Paxos and the core ignorant of files. A record that does
//! not decode, or an entry filed under another position than it names, is
//! corruption: [`WalStorage::open`] refuses it (the master then refuses to vote)
//! rather than serve it.
//!
//! An entry's record is written when it is accepted (or learned from a peer) and
//! not again when this replica learns that very value: the metadata's learned
//! prefix ([`Metadata::learned_below`]) marks it, and [`decode_state`] applies the
//! prefix to the entries it reads. Writing each learned value twice had made a
//! follower write every appended byte twice and compact the copies away.

use std::path::{Path, PathBuf};

use super::storage::{Storage, StorageError};
use super::types::{Action, DurableState, Entry, Metadata, PersistOp};
use super::wal::{RecordParts, TornTail, Wal, WalError, WalOptions, WriteBatch};

/// Values at least this large go to the WAL as [`RecordParts`] around the shared
/// value rather than encoded into a record of their own (one copy of the value
/// instead of two). Smaller ones are cheaper to encode whole than to split.
pub const SHARED_VALUE_MIN_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("replicated log in {dir} is corrupt: the metadata record does not decode ({reason})")]
    BadMetadata { dir: PathBuf, reason: String },
    #[error("replicated log in {dir} is corrupt: the record of position {position} does not decode ({reason})")]
    BadEntry {
        dir: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("replicated log in {dir} is corrupt: the record filed under position {filed} holds position {named}")]
    MisfiledEntry {
        dir: PathBuf,
        filed: u64,
        named: u64,
    },
}

/// What [`WalStorage::open`] found on disk.
#[derive(Debug)]
pub struct Opened {
    pub storage: WalStorage,
    pub state: DurableState,
    /// A record cut short by a crash mid-write, dropped on open. Its write never
    /// completed, so nothing that depended on it was ever sent.
    pub torn_tail: Option<TornTail>,
}

/// The durable store of one replica.
#[derive(Debug, Clone)]
pub struct WalStorage {
    wal: Wal,
    /// The state read at open; [`Storage::load`] serves it until the first
    /// non-empty [`Storage::apply`] (load is a start-up call).
    loaded: Option<DurableState>,
}

impl WalStorage {
    pub fn open(dir: &Path, options: WalOptions) -> Result<Opened, DurableError> {
        let (wal, recovered) = Wal::open(dir, options)?;
        let state = decode_state(dir, recovered.meta, recovered.positions)?;
        Ok(Opened {
            storage: WalStorage {
                wal,
                loaded: Some(state.clone()),
            },
            state,
            torn_tail: recovered.torn_tail,
        })
    }

    /// Persists `ops` durably (group-committed with concurrent writers).
    pub async fn apply_async(&self, ops: &[PersistOp]) -> Result<(), StorageError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.wal
            .write_async(encode(ops)?)
            .await
            .map_err(|e| StorageError::Io(e.to_string()))
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }
}

/// Decodes the records [`Wal::open`] recovered into the core's state; `dir` only
/// names the store in errors. Public (hidden) so the fuzzers (`fuzz/`) run exactly
/// what [`WalStorage::open`] runs on persisted bytes.
#[doc(hidden)]
pub fn decode_state(
    dir: &Path,
    meta: Option<Vec<u8>>,
    positions: std::collections::BTreeMap<u64, Vec<u8>>,
) -> Result<DurableState, DurableError> {
    let metadata = match meta {
        None => Metadata::default(),
        Some(bytes) => decode_metadata(&bytes).map_err(|e| DurableError::BadMetadata {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?,
    };
    let mut entries = Vec::with_capacity(positions.len());
    for (filed, bytes) in positions {
        let entry = postcard::from_bytes::<Entry>(&bytes).map_err(|e| DurableError::BadEntry {
            dir: dir.to_path_buf(),
            position: filed,
            reason: e.to_string(),
        })?;
        if entry.position != filed {
            return Err(DurableError::MisfiledEntry {
                dir: dir.to_path_buf(),
                filed,
                named: entry.position,
            });
        }
        entries.push(entry);
    }
    let mut state = DurableState { metadata, entries };
    state.mark_learned_prefix(0);
    Ok(state)
}

/// Metadata as masters before [`Metadata::learned_below`] wrote (and read) it.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct MetadataBeforeLearnedBelow {
    status: super::types::ReplicaStatus,
    log_id: Option<super::types::LogId>,
    promised: Option<super::types::Proposal>,
    begin: u64,
}

/// The metadata record as this master writes it or, failing that, as masters
/// before [`Metadata::learned_below`] wrote it (the same fields without the last
/// one, which then reads as 0: no prefix marked).
fn decode_metadata(bytes: &[u8]) -> Result<Metadata, postcard::Error> {
    match postcard::from_bytes::<Metadata>(bytes) {
        Err(postcard::Error::DeserializeUnexpectedEnd) => {
            let old = postcard::from_bytes::<MetadataBeforeLearnedBelow>(bytes)?;
            Ok(Metadata {
                status: old.status,
                log_id: old.log_id,
                promised: old.promised,
                begin: old.begin,
                learned_below: 0,
            })
        }
        decoded => decoded,
    }
}

fn encode(ops: &[PersistOp]) -> Result<WriteBatch, StorageError> {
    let mut batch = WriteBatch::new();
    for op in ops {
        batch = match op {
            PersistOp::SetMetadata(metadata) => batch.meta(to_bytes(metadata)?),
            PersistOp::PutEntry(entry) => match entry_parts(entry)? {
                Some(parts) => batch.put_parts(entry.position, parts),
                None => batch.put(entry.position, to_bytes(entry)?),
            },
            PersistOp::TruncateBelow(position) => batch.truncate_below(*position),
        };
    }
    Ok(batch)
}

/// The record of `entry` as the pieces around its value, when the value is large
/// enough to be worth it ([`SHARED_VALUE_MIN_BYTES`]); the same bytes as
/// [`to_bytes`] (pinned by `entry_parts_are_the_bytes_of_the_whole_record`).
///
/// Postcard writes an `Append` value as a varint length and the bytes, and the
/// entry's `learned` flag after it. So the entry is encoded with an empty value,
/// which ends in the length 0 and the flag, and the real length goes where the 0
/// was. Any other shape (a future field after the value, say) is not split.
fn entry_parts(entry: &Entry) -> Result<Option<RecordParts>, StorageError> {
    let Action::Append(value) = &entry.action else {
        return Ok(None);
    };
    if value.len() < SHARED_VALUE_MIN_BYTES {
        return Ok(None);
    }
    let hollow = Entry {
        action: Action::Append(bytes::Bytes::new()),
        ..entry.clone()
    };
    let mut head = to_bytes(&hollow)?;
    let tail = to_bytes(&entry.learned)?;
    let split = head.len().checked_sub(tail.len() + 1);
    let Some(split) = split.filter(|&at| head[at] == 0 && head[at + 1..] == tail[..]) else {
        return Ok(None);
    };
    head.truncate(split);
    head.extend_from_slice(&to_bytes(&(value.len() as u64))?);
    Ok(Some(RecordParts {
        head,
        value: value.clone(),
        tail,
    }))
}

/// Encodes a record into one allocation of exactly its size: see
/// [`encode_exact`](super::types::encode_exact).
fn to_bytes<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    super::types::encode_exact(value)
        .map_err(|e| StorageError::Io(format!("cannot encode a record: {e}")))
}

impl Storage for WalStorage {
    fn load(&self) -> Result<DurableState, StorageError> {
        self.loaded.clone().ok_or_else(|| {
            StorageError::Io("the durable state is read once, at open; reopen to load it".into())
        })
    }

    fn apply(&mut self, ops: &[PersistOp]) -> Result<(), StorageError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.loaded = None;
        self.wal
            .write(encode(ops)?)
            .map_err(|e| StorageError::Io(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::storage::storage_contract_tests;
    use crate::log::types::{Action, LogId, MemberId, Proposal, ReplicaStatus};

    fn reopen(dir: &Path) -> Opened {
        match WalStorage::open(dir, WalOptions::default()) {
            Ok(opened) => opened,
            Err(e) => panic!("reopen {}: {e}", dir.display()),
        }
    }

    #[test]
    fn wal_storage_meets_the_storage_contract() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut made = 0;
        let result = storage_contract_tests(
            || {
                made += 1;
                reopen(&root.path().join(format!("store-{made}"))).storage
            },
            |storage: WalStorage| {
                let dir = storage.wal().dir().to_path_buf();
                drop(storage);
                reopen(&dir).storage
            },
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_record_that_does_not_decode_is_refused_with_its_position() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("log");
        {
            let opened = reopen(&dir);
            opened
                .storage
                .wal()
                .write(WriteBatch::new().put(4, vec![0xff; 3]))
                .expect("write");
        }
        match WalStorage::open(&dir, WalOptions::default()) {
            Err(DurableError::BadEntry { position: 4, .. }) => {}
            other => panic!("expected BadEntry at 4, got {other:?}"),
        }
    }

    #[test]
    fn an_entry_filed_under_another_position_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("log");
        let entry = Entry {
            position: 9,
            accepted: Proposal {
                round: 1,
                proposer: MemberId::new("127.0.0.1:5050"),
            },
            action: Action::Append(b"x".to_vec().into()),
            learned: true,
        };
        {
            let opened = reopen(&dir);
            let bytes = postcard::to_allocvec(&entry).expect("encode");
            opened
                .storage
                .wal()
                .write(WriteBatch::new().put(3, bytes))
                .expect("write");
        }
        match WalStorage::open(&dir, WalOptions::default()) {
            Err(DurableError::MisfiledEntry {
                filed: 3, named: 9, ..
            }) => {}
            other => panic!("expected MisfiledEntry, got {other:?}"),
        }
    }

    /// Records are encoded exactly as postcard's own encoder does, into a buffer
    /// of exactly their size (no growth past it, no spare capacity held).
    #[test]
    fn records_encode_as_postcard_does_into_an_exact_allocation() {
        for len in [0usize, 1, 200, 64 << 10] {
            let entry = Entry {
                position: 1 << 40,
                accepted: Proposal {
                    round: 3,
                    proposer: MemberId::new("127.0.0.1:5050"),
                },
                action: Action::Append(vec![0xa5; len].into()),
                learned: true,
            };
            let bytes = to_bytes(&entry).expect("encode");
            assert_eq!(bytes, postcard::to_allocvec(&entry).expect("encode"));
            assert_eq!(bytes.capacity(), bytes.len(), "payload of {len} bytes");
        }
        let metadata = Metadata {
            status: ReplicaStatus::Voting,
            log_id: Some(LogId(7)),
            promised: None,
            begin: 3,
            learned_below: 2,
        };
        let bytes = to_bytes(&metadata).expect("encode");
        assert_eq!(bytes, postcard::to_allocvec(&metadata).expect("encode"));
        assert_eq!(bytes.capacity(), bytes.len());
    }

    /// The pieces of a split record are exactly the bytes of the whole one, for
    /// values on both sides of the threshold and lengths whose varint takes 1 to 4
    /// bytes, and the store reads them back as the entries written.
    #[test]
    fn entry_parts_are_the_bytes_of_the_whole_record() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("log");
        let mut written = Vec::new();
        {
            let opened = reopen(&dir);
            let lengths = [0usize, 1, 127, 128, SHARED_VALUE_MIN_BYTES - 1];
            let split_lengths = [SHARED_VALUE_MIN_BYTES, 16383, 16384, 64 << 10, 2_097_152];
            for (index, &len) in lengths.iter().chain(split_lengths.iter()).enumerate() {
                for learned in [false, true] {
                    let entry = Entry {
                        position: (index as u64) * 2 + u64::from(learned) + (1 << 33),
                        accepted: Proposal {
                            round: 300 + index as u64,
                            proposer: MemberId::new("127.0.0.3:5050"),
                        },
                        action: Action::Append(vec![index as u8; len].into()),
                        learned,
                    };
                    let whole = to_bytes(&entry).expect("encode");
                    match entry_parts(&entry).expect("encode") {
                        Some(parts) => {
                            assert!(len >= SHARED_VALUE_MIN_BYTES, "{len} split");
                            assert_eq!(parts.to_vec(), whole, "value of {len} bytes");
                        }
                        None => assert!(len < SHARED_VALUE_MIN_BYTES, "{len} not split"),
                    }
                    written.push(entry);
                }
            }
            let ops: Vec<PersistOp> = written.iter().cloned().map(PersistOp::PutEntry).collect();
            let mut storage = opened.storage;
            storage.apply(&ops).expect("apply");
        }
        let state = reopen(&dir).state;
        for entry in &written {
            assert!(state.entries.contains(entry), "{entry:?} not read back");
        }
        for action in [Action::Nop, Action::Truncate { to: 9 }] {
            let entry = Entry {
                position: 1,
                accepted: Proposal {
                    round: 1,
                    proposer: MemberId::new("127.0.0.3:5050"),
                },
                action,
                learned: true,
            };
            assert_eq!(entry_parts(&entry).expect("encode"), None);
        }
    }

    /// A store written by an older master opens with no learned prefix, and an
    /// older master reads this one's metadata (ignoring the prefix), so a rollback
    /// in either direction keeps the promise, the status and the truncation point.
    #[test]
    fn metadata_reads_across_the_learned_prefix_in_both_directions() {
        let promised = Some(Proposal {
            round: 12,
            proposer: MemberId::new("127.0.0.2:5050"),
        });
        let old = MetadataBeforeLearnedBelow {
            status: ReplicaStatus::Voting,
            log_id: Some(LogId(u64::MAX - 3)),
            promised: promised.clone(),
            begin: 1 << 35,
        };
        let decoded = decode_metadata(&postcard::to_allocvec(&old).expect("encode"))
            .expect("older metadata decodes");
        let new = Metadata {
            status: ReplicaStatus::Voting,
            log_id: Some(LogId(u64::MAX - 3)),
            promised,
            begin: 1 << 35,
            learned_below: (1 << 35) + 700,
        };
        assert_eq!(
            decoded,
            Metadata {
                learned_below: 0,
                ..new.clone()
            }
        );
        assert_eq!(
            decode_metadata(&to_bytes(&new).expect("encode")).expect("decodes"),
            new
        );
        let read_by_older: MetadataBeforeLearnedBelow =
            postcard::from_bytes(&to_bytes(&new).expect("encode")).expect("older master reads it");
        assert_eq!(read_by_older, old);
        // Cut short of its older fields, it is still corruption.
        let bytes = postcard::to_allocvec(&old).expect("encode");
        assert!(decode_metadata(&bytes[..bytes.len() - 1]).is_err());
    }

    /// One batch a replica hands the store, in the shapes a replica makes them.
    #[derive(Debug, Clone)]
    enum Step {
        /// Accepted (or learned) entries; values on both sides of the split size.
        Puts(Vec<(u64, u64, usize, bool)>),
        /// Metadata raising `begin`, then the truncation, as `Replica::truncate_below`.
        Truncate(u64),
        /// The learned prefix raised, after an entry or two, as a lazy flush.
        Prefix(Vec<(u64, u64, usize, bool)>, u64),
        /// The master restarts: the store is reopened from its files.
        Reopen,
    }

    fn puts() -> impl proptest::strategy::Strategy<Value = Vec<(u64, u64, usize, bool)>> {
        use proptest::prelude::*;
        let len = prop_oneof![
            0..64usize,
            SHARED_VALUE_MIN_BYTES..3 * SHARED_VALUE_MIN_BYTES
        ];
        proptest::collection::vec((0..24u64, 1..4u64, len, any::<bool>()), 1..4)
    }

    fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
        use proptest::prelude::*;
        let step = prop_oneof![
            5 => puts().prop_map(Step::Puts),
            1 => (0..24u64).prop_map(Step::Truncate),
            3 => (puts(), 0..26u64).prop_map(|(p, below)| Step::Prefix(p, below)),
            1 => Just(Step::Reopen),
        ];
        proptest::collection::vec(step, 1..40)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// The store on disk reads back, after any restart, what the in-memory
        /// image holds: learned prefixes included, across truncations, segment
        /// rolls and compaction (segments of 8 KiB).
        #[test]
        fn the_wal_reads_back_what_the_in_memory_image_holds(steps in steps()) {
            let root = tempfile::tempdir().expect("tempdir");
            let dir = root.path().join("log");
            let options = WalOptions {
                segment_size_bytes: 8 * 1024,
                ..WalOptions::default()
            };
            let open = |dir: &Path| match WalStorage::open(dir, options.clone()) {
                Ok(opened) => opened,
                Err(e) => panic!("open {}: {e}", dir.display()),
            };
            let mut store = open(&dir).storage;
            let mut image = crate::log::storage::MemStorage::new();
            let mut meta = Metadata {
                status: ReplicaStatus::Voting,
                log_id: Some(LogId(5)),
                ..Metadata::default()
            };
            let mut first = vec![PersistOp::SetMetadata(meta.clone())];
            let entry_ops = |meta: &Metadata, puts: &[(u64, u64, usize, bool)]| -> Vec<PersistOp> {
                puts.iter()
                    // A replica never writes below its truncation point.
                    .filter(|(position, ..)| *position >= meta.begin)
                    .map(|&(position, round, len, learned)| {
                        PersistOp::PutEntry(Entry {
                            position,
                            accepted: Proposal {
                                round,
                                proposer: MemberId::new("127.0.0.1:5050"),
                            },
                            action: Action::Append(vec![position as u8 ^ round as u8; len].into()),
                            learned,
                        })
                    })
                    .collect()
            };
            for step in steps {
                let mut ops = std::mem::take(&mut first);
                match step {
                    Step::Puts(puts) => ops.extend(entry_ops(&meta, &puts)),
                    Step::Truncate(to) if to > meta.begin => {
                        meta.begin = to;
                        ops.push(PersistOp::SetMetadata(meta.clone()));
                        ops.push(PersistOp::TruncateBelow(to));
                    }
                    Step::Truncate(_) => {}
                    Step::Prefix(puts, below) => {
                        ops.extend(entry_ops(&meta, &puts));
                        if below > meta.learned_below {
                            meta.learned_below = below;
                            ops.push(PersistOp::SetMetadata(meta.clone()));
                        }
                    }
                    Step::Reopen => {
                        let dir = store.wal().dir().to_path_buf();
                        drop(store);
                        let reopened = open(&dir);
                        proptest::prop_assert_eq!(&reopened.state, &image.state);
                        store = reopened.storage;
                    }
                }
                store.apply(&ops).expect("apply");
                image.apply(&ops).expect("apply");
            }
            drop(store);
            proptest::prop_assert_eq!(&open(&dir).state, &image.state);
        }
    }

    #[tokio::test]
    async fn async_apply_is_durable_across_reopen() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("log");
        let metadata = Metadata {
            status: ReplicaStatus::Voting,
            log_id: Some(LogId(42)),
            promised: None,
            begin: 0,
            learned_below: 0,
        };
        {
            let opened = reopen(&dir);
            opened
                .storage
                .apply_async(&[PersistOp::SetMetadata(metadata.clone())])
                .await
                .expect("apply");
        }
        assert_eq!(reopen(&dir).state.metadata, metadata);
    }
}
