//! The registrar: the registry's writer and reader on top of the replicated log.
//!
//! Writes ([`Registrar::submit`]) are validated against the registry plus every
//! operation queued or in flight ahead of them, queued, and batched into log
//! appends: up to [`MAX_BATCH_OPERATIONS`] per append and up to
//! [`MAX_APPENDS_IN_FLIGHT`] appends at once. A write resolves only once its entry
//! is learned (the [`LogWriter::append`] future resolved) *and* applied here (the
//! log driver handed it back through [`Registrar::apply_learned`]).
//!
//! The leader's registrar snapshots the registry into the log once enough has been
//! written since the last snapshot (see [`SNAPSHOT_AFTER_OPERATIONS`] and
//! [`SNAPSHOT_MIN_SUFFIX_BYTES`]) and then proposes truncating the log below it.
//! A member that (re)starts is fed the log from its begin, which is then a snapshot,
//! and so rebuilds the registry from that snapshot plus the entries after it.
//! A snapshot is appended as consecutive chunk entries of at most
//! [`RegistrarConfig::snapshot_chunk_bytes`] (see `registry.rs`), all proposed at
//! once so nothing lands between them, and is truncated below only once every
//! chunk was learned and the whole accepted.
//!
//! Wiring, for the log driver (inside the tokio runtime):
//!
//! ```text
//! let writer: Arc<dyn LogWriter> = Arc::new(driver_writer);     // appends via the coordinator
//! let registrar = Registrar::new(RegistrarConfig::new(advertise_addr.to_string()), writer, metrics.clone());
//! let app = http::router_with_registry(MasterState { view, metrics }, registrar.clone());
//! // for every learned Append entry, in position order (from the log's begin after a restart):
//! registrar.apply_learned(position, &bytes)?;                      // Err = corrupt log: report, stop serving
//! registrar.set_read_lease(elected && lease_held);                 // whenever the lease changes
//! ```

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::oneshot;

use super::metrics::Metrics;
use super::registry::{
    encode_batch, encode_snapshot, encode_snapshot_chunks, Applied, CorruptEntry, MasterRecord,
    Operation, OperationError, Pending, Registry, RegistryMachine, SNAPSHOT_CHUNK_BYTES,
};
use super::transfer::import_chunks;

/// A boxed future the log driver returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Most operations in one append. Bounds an entry at roughly 1,024 agents' records
/// (~0.25 MB) however many clients are waiting, so one append never stalls the log.
pub const MAX_BATCH_OPERATIONS: usize = 1_024;
/// Appends in flight at once: enough to keep the log's pipeline busy while the next
/// batch fills, few enough that a failure fails a bounded number of writes.
pub const MAX_APPENDS_IN_FLIGHT: usize = 4;
/// Operations that may wait for an append; beyond it writes are refused (503) rather
/// than queued without bound. A full registry's worth of admissions fits.
pub const MAX_QUEUED_OPERATIONS: usize = 50_000;
/// Snapshot after this many operations since the last snapshot, so that a
/// restarting member replays at most this many (well under a second).
pub const SNAPSHOT_AFTER_OPERATIONS: u64 = 100_000;
/// Snapshot once the entries since the last snapshot reach this many bytes or the
/// snapshot's own size, whichever is larger: the log then stays under about twice
/// the registry plus this, and rewriting a large registry costs at most as much as
/// the writes that preceded it (amortized O(1) per write, never per store).
pub const SNAPSHOT_MIN_SUFFIX_BYTES: u64 = 16 << 20;
/// How far (in log positions) the registry may trail what this member knows to be
/// learned and still serve reads: delivery trails learning by a few positions under
/// load; a member further behind is catching up and refuses reads (503) rather
/// than serve a registry that may lack many acknowledged writes.
pub const MAX_READ_LAG_POSITIONS: u64 = 256;

/// Why an append or a truncation did not happen (or may not have).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AppendError {
    /// This member does not lead the log; `leader` is the leader's advertised HTTP
    /// address (`ip:port`) when known.
    #[error("this master is not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    /// No quorum answered in time.
    #[error("the replicated log is unavailable: {0}")]
    Unavailable(String),
    /// Demoted mid-write: the entry may or may not be chosen.
    #[error("leadership was lost during the write; it may or may not have been stored")]
    Unknown,
}

/// The log driver's writing side, implemented by the driver (and, for tests, by
/// [`test_support::MemoryLog`]).
///
/// `append` is called with the registrar's lock held, in the order the entries must
/// take in the log: the driver must assign positions in call order, and must
/// neither block nor call back into the registrar before returning the future.
pub trait LogWriter: Send + Sync + 'static {
    /// Appends one entry through this member's coordinator; resolves with its
    /// position once it is learned (chosen by a quorum).
    fn append(&self, bytes: Vec<u8>) -> BoxFuture<Result<u64, AppendError>>;
    /// Proposes dropping the positions below `to` (a snapshot is at `to`).
    fn truncate(&self, to: u64) -> BoxFuture<Result<u64, AppendError>>;
}

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WriteError {
    /// The operation is invalid against the registry (nothing was written).
    #[error(transparent)]
    Rejected(#[from] OperationError),
    /// The log refused or lost the append.
    #[error(transparent)]
    Log(#[from] AppendError),
    #[error("{0} registry operations are already waiting; retry later")]
    Overloaded(usize),
    /// The log holds an entry this master cannot read; the registrar has stopped.
    #[error("{0}")]
    Corrupt(String),
}

/// The registrar's tunables; [`RegistrarConfig::new`] takes the named defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// This member's advertised address, recorded as the registry's master.
    pub address: String,
    pub max_batch_operations: usize,
    pub max_appends_in_flight: usize,
    pub max_queued_operations: usize,
    pub snapshot_after_operations: u64,
    pub snapshot_min_suffix_bytes: u64,
    /// Largest slice of a snapshot per log entry, at most [`SNAPSHOT_CHUNK_BYTES`].
    pub snapshot_chunk_bytes: usize,
}

impl RegistrarConfig {
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            max_batch_operations: MAX_BATCH_OPERATIONS,
            max_appends_in_flight: MAX_APPENDS_IN_FLIGHT,
            max_queued_operations: MAX_QUEUED_OPERATIONS,
            snapshot_after_operations: SNAPSHOT_AFTER_OPERATIONS,
            snapshot_min_suffix_bytes: SNAPSHOT_MIN_SUFFIX_BYTES,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
        }
    }
}

/// What a read saw, and how stale it may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPosition {
    /// Last log position applied to the registry read.
    pub applied_position: Option<u64>,
    /// Whether this member leads with a read lease: if so, no write it has not
    /// applied can have been acknowledged to anyone.
    pub read_lease: bool,
}

/// The registrar; clones share one registrar.
#[derive(Clone)]
pub struct Registrar {
    shared: Arc<Shared>,
}

impl fmt::Debug for Registrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registrar")
            .field("writer_id", &self.shared.writer_id)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: RegistrarConfig,
    writer: Arc<dyn LogWriter>,
    metrics: Arc<Metrics>,
    /// Tags this registrar's entries, so it recognizes them when they are learned.
    /// Random per process: a restarted member never mistakes old entries for its own.
    writer_id: u64,
    read_lease: AtomicBool,
    runtime: tokio::runtime::Handle,
    state: Mutex<State>,
}

type Reply = oneshot::Sender<Result<(), WriteError>>;

#[derive(Default)]
struct State {
    machine: RegistryMachine,
    applied_position: Option<u64>,
    corrupt: Option<String>,
    queue: VecDeque<(Operation, Reply)>,
    /// The effect of every queued and in-flight operation.
    pending: Pending,
    in_flight: BTreeMap<u64, InFlight>,
    next_seq: u64,
    snapshot: SnapshotState,
    /// Whether this member's master record has been sent since it last failed to
    /// write (a failed append may mean another master leads now).
    writing: bool,
    /// The snapshot this member is appending, kept so that applying it is a
    /// comparison of bytes rather than a decode of the whole registry.
    own_snapshot: Option<OwnSnapshot>,
    /// Last log position the driver delivered (registry entry or not).
    delivered_position: u64,
    /// The log skipped positions truncated before they reached this member: the
    /// registry is rebuilt from the next snapshot and is not readable until then.
    awaiting_snapshot: bool,
}

struct OwnSnapshot {
    seq: u64,
    /// The whole encoded snapshot its chunks reassemble to.
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum SnapshotState {
    #[default]
    Idle,
    /// Waiting for the appends in flight to be applied, so the snapshot is exactly
    /// the registry after the last entry before it.
    Due,
    /// Encoding off the lock (reads and learning go on; new batches wait, as they
    /// must follow the snapshot in the log).
    Encoding,
    Appending,
}

struct InFlight {
    started: Instant,
    operations: Vec<Operation>,
    /// One per operation; `None` for the registrar's own (the master record).
    replies: Vec<Option<Reply>>,
    position: Option<u64>,
    applied: Option<Applied>,
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update below leaves `State` consistent before anything can panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Nanoseconds since the Unix epoch (0 for a clock before it).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
        })
}

impl Registrar {
    /// A registrar with an empty registry, writing through `writer`. Must be called
    /// inside a tokio runtime: appends are awaited on it.
    pub fn new(config: RegistrarConfig, writer: Arc<dyn LogWriter>, metrics: Arc<Metrics>) -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write(config.address.as_bytes());
        hasher.write_i64(now_ns());
        hasher.write_u32(std::process::id());
        Self {
            shared: Arc::new(Shared {
                config,
                writer,
                metrics,
                writer_id: hasher.finish(),
                read_lease: AtomicBool::new(false),
                runtime: tokio::runtime::Handle::current(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The log driver says whether this member leads and holds a read lease.
    pub fn set_read_lease(&self, held: bool) {
        self.shared.read_lease.store(held, Ordering::Release);
    }

    pub fn read_lease(&self) -> bool {
        self.shared.read_lease.load(Ordering::Acquire)
    }

    /// Reads the registry as applied so far. Fails only once the log was found
    /// corrupt (the registry stopped at the entry before).
    pub fn read<T>(&self, read: impl FnOnce(&Registry) -> T) -> Result<(T, ReadPosition), String> {
        let state = lock(&self.shared.state);
        if let Some(reason) = &state.corrupt {
            return Err(reason.clone());
        }
        let value = read(state.machine.registry());
        Ok((
            value,
            ReadPosition {
                applied_position: state.applied_position,
                read_lease: self.read_lease(),
            },
        ))
    }

    /// Whether the registry may serve reads, given the highest position this member
    /// knows to be learned: `Err` says why not (restoring from a snapshot, or too
    /// far behind). The caller also requires a `Voting` replica.
    pub fn readable(&self, learned_position: u64, log_begin: u64) -> Result<(), String> {
        let state = lock(&self.shared.state);
        if let Some(reason) = &state.corrupt {
            return Err(reason.clone());
        }
        // The replica already holds a log that begins above everything delivered
        // (a wiped member that caught up from a truncated log), but the driver has
        // not yet said so: what the registry holds is not that log's prefix.
        if state.awaiting_snapshot || state.delivered_position + 1 < log_begin {
            return Err(format!(
                "restoring from a snapshot: the log was truncated below position {} before this member read it",
                state.delivered_position + 1
            ));
        }
        if state.delivered_position + MAX_READ_LAG_POSITIONS < learned_position {
            return Err(format!(
                "catching up: applied up to position {} of {learned_position} learned",
                state.delivered_position
            ));
        }
        Ok(())
    }

    /// The driver delivered the learned `position`, which holds no registry entry
    /// (a Nop, a truncation, a raw entry).
    pub fn note_delivered(&self, position: u64) {
        let mut state = lock(&self.shared.state);
        state.delivered_position = state.delivered_position.max(position);
    }

    /// The driver skipped to `position`: everything below was truncated before this
    /// member read it, so the registry it holds misses entries. It is dropped and
    /// rebuilt from the snapshot the log begins with at `position`.
    pub fn skipped_to(&self, position: u64) {
        let mut state = lock(&self.shared.state);
        if state.delivered_position + 1 >= position {
            return;
        }
        tracing::warn!(
            position,
            applied_position = ?state.applied_position,
            "the log was truncated past this member's registry; restoring from the next snapshot"
        );
        state.machine = RegistryMachine::default();
        state.applied_position = position.checked_sub(1);
        state.delivered_position = state.delivered_position.max(position.saturating_sub(1));
        state.awaiting_snapshot = true;
        state.own_snapshot = None;
        self.publish_metrics(&state);
    }

    /// The registry exactly as this member has applied its learned prefix, and the
    /// last position delivered to it (every learned position up to it is
    /// reflected), for a recovery after quorum loss: no quorum, leader or `Voting`
    /// status is needed, and nothing accepted but unlearned is ever in it (an
    /// accepted value may not be the chosen one). Refused while the registry is
    /// being restored from a snapshot (it is then not a prefix of the log) or after
    /// the log was found corrupt.
    pub fn local_export(&self) -> Result<(Registry, u64), String> {
        let state = lock(&self.shared.state);
        if let Some(reason) = &state.corrupt {
            return Err(reason.clone());
        }
        if state.awaiting_snapshot {
            return Err(format!(
                "restoring from a snapshot: the log was truncated below position {} before this member read it, so its registry is not a prefix of the log yet",
                state.delivered_position + 1
            ));
        }
        Ok((state.machine.registry().clone(), state.delivered_position))
    }

    /// Last position applied.
    pub fn applied_position(&self) -> Option<u64> {
        lock(&self.shared.state).applied_position
    }

    /// Position of the latest snapshot applied, if any.
    pub fn snapshot_position(&self) -> Option<u64> {
        lock(&self.shared.state).machine.snapshot_position()
    }

    /// Validates `operation`, queues it, and resolves once it is learned and applied
    /// (or failed). Refused at once, with nothing written, when invalid against the
    /// registry plus the operations queued ahead of it.
    pub async fn submit(&self, operation: Operation) -> Result<(), WriteError> {
        let mut receivers = self.enqueue(vec![operation])?;
        match receivers.pop() {
            Some(receiver) => resolve(receiver).await,
            None => Ok(()),
        }
    }

    /// Queues `operations` back to back (nothing queued by others comes between
    /// them), after validating each against the registry plus everything ahead.
    fn enqueue(
        &self,
        operations: Vec<Operation>,
    ) -> Result<Vec<oneshot::Receiver<Result<(), WriteError>>>, WriteError> {
        let mut state = lock(&self.shared.state);
        if let Some(reason) = &state.corrupt {
            return Err(WriteError::Corrupt(reason.clone()));
        }
        if state.queue.len() + operations.len() > self.shared.config.max_queued_operations {
            return Err(WriteError::Overloaded(state.queue.len()));
        }
        let mut pending = state.pending.clone();
        for operation in &operations {
            state.machine.registry().validate(operation, &pending)?;
            pending.record(operation);
        }
        state.pending = pending;
        let receivers = operations
            .into_iter()
            .map(|operation| {
                let (reply, receiver) = oneshot::channel();
                state.queue.push_back((operation, reply));
                receiver
            })
            .collect();
        self.pump(&mut state);
        self.publish_metrics(&state);
        Ok(receivers)
    }

    /// Seals the registry through the log (`POST /registry/seal`): once applied,
    /// every data write is refused, so the registry returned (with the seal's
    /// position) stays complete until the log is wiped. Sealing a sealed registry
    /// returns it again, with the first seal's position.
    pub async fn seal(&self) -> Result<(Registry, u64), WriteError> {
        self.submit(Operation::Seal).await?;
        let state = lock(&self.shared.state);
        let registry = state.machine.registry();
        match registry.sealed {
            Some(position) => Ok((registry.clone(), position)),
            // An unseal was applied right after the seal.
            None => Err(WriteError::Log(AppendError::Unavailable(
                "the registry was unsealed again before the seal could be read".into(),
            ))),
        }
    }

    /// Lifts a seal (`POST /registry/unseal`); a no-op on an unsealed registry.
    pub async fn unseal(&self) -> Result<(), WriteError> {
        self.submit(Operation::Unseal).await
    }

    /// Imports `registry` into this (empty) registry through the log
    /// (`POST /registry/import`), in chunks of bounded size that become visible
    /// together when the last one is applied. Resolves once all are learned and
    /// applied. Refused with [`OperationError::NotEmpty`] when the registry holds
    /// data (at submission or when the import completes); a retried import starts
    /// a new staging, so an interrupted one never applies twice.
    pub async fn import(&self, registry: &Registry) -> Result<(), WriteError> {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(self.shared.writer_id);
        hasher.write_i64(now_ns());
        let chunks = import_chunks(registry, hasher.finish());
        let receivers = self.enqueue(chunks)?;
        let mut outcome = Ok(());
        // Every chunk is awaited, so no reply is dropped; the first failure wins.
        for receiver in receivers {
            let result = resolve(receiver).await;
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    }

    /// The log driver hands over every learned `Append` entry, in position order;
    /// after a restart, from the log's begin. A position at or below the last one
    /// applied is a re-delivery and ignored. An entry that cannot be decoded stops
    /// the registrar: the error is returned (and every later call returns it), the
    /// driver should report it loudly; it is never skipped.
    pub fn apply_learned(&self, position: u64, bytes: &[u8]) -> Result<(), CorruptEntry> {
        let mut state = lock(&self.shared.state);
        if let Some(reason) = &state.corrupt {
            return Err(CorruptEntry {
                position,
                reason: reason.clone(),
            });
        }
        if state
            .applied_position
            .is_some_and(|applied| position <= applied)
        {
            return Ok(());
        }
        let started = Instant::now();
        let decoded = {
            let state = &mut *state;
            let own = state.own_snapshot.as_ref().map(|own| own.bytes.as_slice());
            state.machine.apply_entry_known(position, bytes, own)
        };
        let applied = match decoded {
            Ok(applied) => applied,
            Err(corrupt) => {
                tracing::error!(position, reason = %corrupt.reason, "the registry's log is corrupt; the registrar stops");
                let reason = corrupt.to_string();
                state.corrupt = Some(reason.clone());
                for (_, reply) in state.queue.drain(..) {
                    let _ = reply.send(Err(WriteError::Corrupt(reason.clone())));
                }
                for (_, flight) in std::mem::take(&mut state.in_flight) {
                    for reply in flight.replies.into_iter().flatten() {
                        let _ = reply.send(Err(WriteError::Corrupt(reason.clone())));
                    }
                }
                self.publish_metrics(&state);
                return Err(corrupt);
            }
        };
        state.applied_position = Some(position);
        state.delivered_position = state.delivered_position.max(position);
        if matches!(applied, Applied::Snapshot { accepted: true, .. }) {
            state.awaiting_snapshot = false;
        }
        let (writer, seq) = match &applied {
            Applied::Batch { writer, seq, .. } | Applied::Snapshot { writer, seq, .. } => {
                (*writer, *seq)
            }
            // Nothing applied yet: the snapshot completes (or not) at its last chunk.
            Applied::SnapshotChunk { .. } => (0, 0),
        };
        if matches!(applied, Applied::Snapshot { .. })
            && state
                .own_snapshot
                .as_ref()
                .is_some_and(|own| (writer, seq) == (self.shared.writer_id, own.seq))
        {
            state.own_snapshot = None;
        }
        if matches!(applied, Applied::Snapshot { accepted: true, .. }) {
            self.shared
                .metrics
                .registrar()
                .set_state_fetch(started.elapsed());
        }
        if writer == self.shared.writer_id && !matches!(applied, Applied::SnapshotChunk { .. }) {
            if let Some(flight) = state.in_flight.get_mut(&seq) {
                flight.applied = Some(applied);
                if flight.position.is_some() {
                    self.complete(&mut state, seq);
                }
            }
        }
        if state.writing && state.snapshot == SnapshotState::Idle && self.snapshot_due(&state) {
            state.snapshot = SnapshotState::Due;
        }
        self.pump(&mut state);
        self.publish_metrics(&state);
        Ok(())
    }

    fn snapshot_due(&self, state: &State) -> bool {
        let config = &self.shared.config;
        let machine = &state.machine;
        let due = machine.operations_since_snapshot() >= config.snapshot_after_operations
            || machine.bytes_since_snapshot()
                >= config
                    .snapshot_min_suffix_bytes
                    .max(machine.snapshot_bytes());
        // A snapshot drops a staged import (snapshots hold only the visible
        // registry): never take one between this registrar's own import chunks.
        due && !own_import_outstanding(state)
    }

    /// Starts as many appends as the limits allow.
    fn pump(&self, state: &mut State) {
        if state.queue.is_empty() && state.in_flight.is_empty() {
            // Nothing pending: forget overrides (another leader may write next).
            state.pending = Pending::default();
        }
        let config = &self.shared.config;
        while state.corrupt.is_none() && state.in_flight.len() < config.max_appends_in_flight {
            match state.snapshot {
                SnapshotState::Encoding => return,
                SnapshotState::Due if state.in_flight.is_empty() => {
                    self.start_snapshot(state);
                    return;
                }
                SnapshotState::Due => return,
                SnapshotState::Idle | SnapshotState::Appending => {}
            }
            if state.queue.is_empty() {
                return;
            }
            // An import chunk is an entry of its own (chunks are sized to fit one
            // log entry); other operations never share its batch.
            let mut take = 0;
            for (operation, _) in state.queue.iter().take(config.max_batch_operations) {
                if matches!(operation, Operation::ImportChunk { .. }) {
                    take = take.max(1);
                    break;
                }
                take += 1;
            }
            let mut operations = Vec::with_capacity(take + 1);
            let mut replies = Vec::with_capacity(take + 1);
            if !state.writing {
                operations.push(Operation::SetMaster {
                    master: MasterRecord {
                        address: config.address.clone(),
                        elected_time_ns: now_ns(),
                    },
                });
                replies.push(None);
                state.writing = true;
            }
            for (operation, reply) in state.queue.drain(..take) {
                operations.push(operation);
                replies.push(Some(reply));
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            let bytes = encode_batch(self.shared.writer_id, seq, operations.clone());
            self.start_append(state, seq, bytes, operations, replies);
        }
    }

    /// Encodes the registry on the blocking pool, then appends it (if nothing was
    /// applied meanwhile: the snapshot must directly follow its base).
    fn start_snapshot(&self, state: &mut State) {
        let seq = state.next_seq;
        state.next_seq += 1;
        let base_position = state.machine.last_entry_position();
        let registry = state.machine.shared_registry();
        let writer_id = self.shared.writer_id;
        let chunk_bytes = self.shared.config.snapshot_chunk_bytes;
        state.snapshot = SnapshotState::Encoding;
        let registrar = self.clone();
        self.shared.runtime.spawn(async move {
            let agents = registry.agents.len();
            let encoded = tokio::task::spawn_blocking(move || {
                let bytes = encode_snapshot(writer_id, seq, base_position, &registry);
                encode_snapshot_chunks(writer_id, seq, &bytes, chunk_bytes)
                    .map(|chunks| (bytes, chunks))
            })
            .await;
            let mut state = lock(&registrar.shared.state);
            if state.snapshot != SnapshotState::Encoding || state.corrupt.is_some() {
                return;
            }
            match encoded {
                Ok(Ok((bytes, chunks)))
                    if state.machine.last_entry_position() == base_position
                        && state.in_flight.is_empty() =>
                {
                    tracing::info!(
                        snapshot_bytes = bytes.len(),
                        chunks = chunks.len(),
                        agents,
                        "appending a registry snapshot"
                    );
                    state.own_snapshot = Some(OwnSnapshot { seq, bytes });
                    state.snapshot = SnapshotState::Appending;
                    registrar.start_appends(&mut state, seq, chunks, Vec::new(), Vec::new());
                }
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "the registry is too large to snapshot; the log is not truncated");
                    state.snapshot = SnapshotState::Idle;
                }
                Ok(_) => {
                    tracing::info!(
                        "the registry moved on while a snapshot was encoded; dropping it"
                    );
                    state.snapshot = SnapshotState::Idle;
                }
                Err(err) => {
                    tracing::error!(error = %err, "encoding a registry snapshot failed");
                    state.snapshot = SnapshotState::Idle;
                }
            }
            registrar.pump(&mut state);
            registrar.publish_metrics(&state);
        });
    }

    fn start_append(
        &self,
        state: &mut State,
        seq: u64,
        bytes: Vec<u8>,
        operations: Vec<Operation>,
        replies: Vec<Option<Reply>>,
    ) {
        self.start_appends(state, seq, vec![bytes], operations, replies);
    }

    /// Appends `entries` as one in-flight unit (a batch, or a snapshot's chunks):
    /// all are handed to the log now, so they take consecutive positions; the unit
    /// succeeds when every one is learned, at the position of the last.
    fn start_appends(
        &self,
        state: &mut State,
        seq: u64,
        entries: Vec<Vec<u8>>,
        operations: Vec<Operation>,
        replies: Vec<Option<Reply>>,
    ) {
        state.in_flight.insert(
            seq,
            InFlight {
                started: Instant::now(),
                operations,
                replies,
                position: None,
                applied: None,
            },
        );
        let appends: Vec<_> = entries
            .into_iter()
            .map(|bytes| self.shared.writer.append(bytes))
            .collect();
        let registrar = self.clone();
        self.shared.runtime.spawn(async move {
            let mut outcome = Ok(0);
            for append in appends {
                match (append.await, &outcome) {
                    (Ok(position), Ok(last)) => outcome = Ok(position.max(*last)),
                    (Err(err), Ok(_)) => outcome = Err(err),
                    (_, Err(_)) => {}
                }
            }
            registrar.on_append_done(seq, outcome);
        });
    }

    fn on_append_done(&self, seq: u64, result: Result<u64, AppendError>) {
        let mut state = lock(&self.shared.state);
        match result {
            Ok(position) => {
                let Some(flight) = state.in_flight.get_mut(&seq) else {
                    return;
                };
                flight.position = Some(position);
                if flight.applied.is_some() {
                    self.complete(&mut state, seq);
                } else if state
                    .applied_position
                    .is_some_and(|applied| applied >= position)
                {
                    // The driver delivered another entry at this position: a driver
                    // bug, but the writers must not wait forever.
                    tracing::error!(position, seq, "a learned batch was never applied");
                    self.fail(&mut state, seq, &AppendError::Unknown);
                }
            }
            Err(err) => {
                tracing::warn!(seq, error = %err, "registry append failed");
                self.fail(&mut state, seq, &err);
            }
        }
        self.pump(&mut state);
        self.publish_metrics(&state);
    }

    fn fail(&self, state: &mut State, seq: u64, err: &AppendError) {
        if state
            .own_snapshot
            .as_ref()
            .is_some_and(|own| own.seq == seq)
        {
            state.own_snapshot = None;
        }
        if let Some(flight) = state.in_flight.remove(&seq) {
            for reply in flight.replies.into_iter().flatten() {
                let _ = reply.send(Err(WriteError::Log(err.clone())));
            }
        }
        // Whether it was the snapshot or a batch, the snapshot is re-decided at the
        // next entry applied (a failed batch may mean this member no longer leads).
        if state.snapshot == SnapshotState::Appending {
            state.snapshot = SnapshotState::Idle;
        }
        state.writing = false;
        // The failed operations may never apply: revalidate against what remains.
        rebuild_pending(state);
    }

    fn complete(&self, state: &mut State, seq: u64) {
        let Some(flight) = state.in_flight.remove(&seq) else {
            return;
        };
        let (Some(_), Some(applied)) = (flight.position, flight.applied) else {
            return;
        };
        match applied {
            Applied::Batch { outcomes, .. } => {
                self.shared
                    .metrics
                    .registrar()
                    .observe_state_store(flight.started.elapsed());
                // An operation refused at apply (one ahead of it was lost) left its
                // mark in `pending`: forget it.
                let refused = outcomes.iter().any(Result::is_err);
                for (reply, outcome) in flight.replies.into_iter().zip(outcomes) {
                    if let Some(reply) = reply {
                        let _ = reply.send(outcome.map_err(WriteError::Rejected));
                    }
                }
                if refused {
                    rebuild_pending(state);
                }
            }
            Applied::SnapshotChunk { .. } => {}
            Applied::Snapshot {
                accepted,
                first_position,
                ..
            } => {
                state.snapshot = SnapshotState::Idle;
                if accepted {
                    let truncate = self.shared.writer.truncate(first_position);
                    self.shared.runtime.spawn(async move {
                        match truncate.await {
                            Ok(to) => tracing::info!(to, "registry log truncated below snapshot"),
                            Err(err) => tracing::warn!(first_position, error = %err, "truncating the registry log failed; the next snapshot retries"),
                        }
                    });
                }
            }
        }
    }

    fn publish_metrics(&self, state: &State) {
        debug_assert!(
            state.in_flight.len() <= self.shared.config.max_appends_in_flight,
            "no more appends in flight than allowed"
        );
        let in_flight: usize = state.in_flight.values().map(|f| f.replies.len()).sum();
        let metrics = self.shared.metrics.registrar();
        metrics.set_queued_operations(state.queue.len() + in_flight);
        metrics.set_registry_size_bytes(state.machine.log_bytes());
    }
}

/// A queued write's outcome; the sender is dropped only if the registrar is, and
/// then the write's fate is unknown.
async fn resolve(receiver: oneshot::Receiver<Result<(), WriteError>>) -> Result<(), WriteError> {
    receiver
        .await
        .unwrap_or(Err(WriteError::Log(AppendError::Unknown)))
}

/// Whether chunks of an import this registrar submitted are queued or in flight.
fn own_import_outstanding(state: &State) -> bool {
    let chunk = |operation: &Operation| matches!(operation, Operation::ImportChunk { .. });
    state.queue.iter().any(|(operation, _)| chunk(operation))
        || state
            .in_flight
            .values()
            .any(|flight| flight.operations.iter().any(chunk))
}

/// `pending` as the queued and in-flight operations make it.
fn rebuild_pending(state: &mut State) {
    let mut pending = Pending::default();
    for flight in state.in_flight.values() {
        flight.operations.iter().for_each(|op| pending.record(op));
    }
    state.queue.iter().for_each(|(op, _)| pending.record(op));
    state.pending = pending;
}

/// The in-memory log double (for unit tests, and the fuzz crate through the
/// `test-support` feature).
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{memory_registrar, InjectedFailure};
    use super::*;
    use crate::master::registry::tests::agent;
    use crate::master::registry::WeightInfo;

    fn config() -> RegistrarConfig {
        RegistrarConfig::new("127.0.0.1:5050")
    }

    fn admit(id: &str) -> Operation {
        Operation::AdmitAgent { agent: agent(id) }
    }

    fn agents(registrar: &Registrar) -> Vec<String> {
        registrar
            .read(|r| r.agents.keys().cloned().collect())
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn a_write_resolves_after_it_is_learned_and_applied() {
        let (registrar, log) = memory_registrar(config(), Arc::new(Metrics::new()));
        registrar.submit(admit("a")).await.unwrap();
        assert_eq!(agents(&registrar), ["a"]);
        assert_eq!(log.appends(), 1);
        let master = registrar.read(|r| r.master.clone()).unwrap().0.unwrap();
        assert_eq!(master.address, "127.0.0.1:5050");
        assert_eq!(registrar.applied_position(), Some(1));
    }

    #[tokio::test]
    async fn invalid_writes_are_refused_before_the_log() {
        let (registrar, log) = memory_registrar(config(), Arc::new(Metrics::new()));
        registrar.submit(admit("a")).await.unwrap();
        let err = registrar.submit(admit("a")).await.unwrap_err();
        assert_eq!(
            err,
            WriteError::Rejected(OperationError::AgentAlreadyAdmitted("a".into()))
        );
        let bad = Operation::UpdateWeights {
            weights: vec![WeightInfo {
                role: "dev".into(),
                weight: f64::NAN,
            }],
        };
        assert!(matches!(
            registrar.submit(bad).await,
            Err(WriteError::Rejected(_))
        ));
        assert_eq!(log.appends(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_clients_share_few_appends() {
        let (registrar, log) = memory_registrar(config(), Arc::new(Metrics::new()));
        log.hold();
        let clients: Vec<_> = (0..500)
            .map(|i| {
                let registrar = registrar.clone();
                tokio::spawn(async move { registrar.submit(admit(&format!("agent-{i}"))).await })
            })
            .collect();
        // Let every client queue while the first appends are held.
        while queued_or_in_flight(&registrar) < 500 + 1 {
            tokio::task::yield_now().await;
        }
        log.release();
        for client in clients {
            client.await.unwrap().unwrap();
        }
        assert_eq!(agents(&registrar).len(), 500);
        let appends = log.appends();
        assert!(appends <= 5, "{appends} appends for 500 writes");
        // A duplicate of an agent queued in the same batch is refused up front.
        assert!(registrar.submit(admit("agent-1")).await.is_err());
    }

    fn queued_or_in_flight(registrar: &Registrar) -> usize {
        let state = lock(&registrar.shared.state);
        let in_flight: usize = state.in_flight.values().map(|f| f.replies.len()).sum();
        state.queue.len() + in_flight
    }

    #[tokio::test]
    async fn log_failures_reach_the_writers_and_later_writes_still_validate() {
        let (registrar, log) = memory_registrar(config(), Arc::new(Metrics::new()));
        let leader = Some("127.0.0.2:5050".to_owned());
        log.inject(InjectedFailure::Lost(AppendError::NotLeader {
            leader: leader.clone(),
        }));
        assert_eq!(
            registrar.submit(admit("a")).await,
            Err(WriteError::Log(AppendError::NotLeader { leader }))
        );
        // The lost admission left nothing behind: "a" may be admitted again.
        registrar.submit(admit("a")).await.unwrap();
        log.inject(InjectedFailure::UnknownButChosen);
        assert_eq!(
            registrar.submit(admit("b")).await,
            Err(WriteError::Log(AppendError::Unknown))
        );
        // Unknown means unknown: here it was chosen, and every member applies it.
        assert_eq!(agents(&registrar), ["a", "b"]);
        log.inject(InjectedFailure::Lost(AppendError::Unavailable(
            "no quorum".into(),
        )));
        assert!(matches!(
            registrar.submit(admit("c")).await,
            Err(WriteError::Log(AppendError::Unavailable(_)))
        ));
    }

    #[tokio::test]
    async fn a_lost_batch_does_not_poison_the_pipelined_one_behind_it() {
        let (registrar, log) = memory_registrar(config(), Arc::new(Metrics::new()));
        log.hold();
        log.inject(InjectedFailure::Lost(AppendError::Unavailable(
            "no quorum".into(),
        )));
        let first = tokio::spawn({
            let registrar = registrar.clone();
            async move { registrar.submit(admit("a")).await }
        });
        while queued_or_in_flight(&registrar) == 0 {
            tokio::task::yield_now().await;
        }
        // Valid against the pending admission ahead of it, so it is appended too.
        let gone = Operation::MarkAgentGone {
            id: "a".into(),
            time_ns: 1,
        };
        let second = tokio::spawn({
            let registrar = registrar.clone();
            async move { registrar.submit(gone).await }
        });
        while log.appends() < 2 {
            tokio::task::yield_now().await;
        }
        log.release();
        assert!(matches!(
            first.await.unwrap(),
            Err(WriteError::Log(AppendError::Unavailable(_)))
        ));
        // Applied after the loss, it no longer holds: refused, and nothing changed.
        assert_eq!(
            second.await.unwrap(),
            Err(WriteError::Rejected(OperationError::AgentNotFound(
                "a".into()
            )))
        );
        let registry = registrar.read(Registry::clone).unwrap().0;
        assert!(registry.agents.is_empty() && registry.gone.is_empty());
        // And the registrar writes on.
        registrar.submit(admit("a")).await.unwrap();
    }

    /// Many clients, injected log failures and frequent snapshots: whatever the
    /// interleaving, a member rebuilt from the log holds exactly the writer's
    /// registry, and every acknowledged admission is in it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_failures_the_log_rebuilds_exactly_the_writers_registry() {
        for seed in 0..8u64 {
            let mut config = config();
            config.snapshot_after_operations = 40;
            config.max_batch_operations = 16;
            let (registrar, log) = memory_registrar(config, Arc::new(Metrics::new()));
            for i in 0..30 {
                log.inject(match (seed + i) % 5 {
                    0 => InjectedFailure::Lost(AppendError::Unknown),
                    1 => InjectedFailure::UnknownButChosen,
                    2 => InjectedFailure::Lost(AppendError::NotLeader { leader: None }),
                    _ => continue,
                });
            }
            let clients: Vec<_> = (0..300u64)
                .map(|i| {
                    let registrar = registrar.clone();
                    let id = format!("a{}", (i * 7 + seed) % 120);
                    let operation = if i % 4 == 3 {
                        Operation::MarkAgentGone {
                            id: id.clone(),
                            time_ns: 1,
                        }
                    } else {
                        admit(&id)
                    };
                    tokio::spawn(async move {
                        let admitted = matches!(operation, Operation::AdmitAgent { .. });
                        (id, admitted, registrar.submit(operation).await)
                    })
                })
                .collect();
            let mut acknowledged = Vec::new();
            for client in clients {
                let (id, admitted, result) = client.await.unwrap();
                if admitted && result.is_ok() {
                    acknowledged.push(id);
                }
            }
            let writer = registrar.read(Registry::clone).unwrap().0;
            for id in &acknowledged {
                assert_ne!(
                    writer.agent_location(id),
                    crate::master::registry::AgentLocation::Absent,
                    "{id}"
                );
            }
            let (rebuilt, _) = memory_registrar(
                RegistrarConfig::new("127.0.0.3:5050"),
                Arc::new(Metrics::new()),
            );
            log.replay_into(&rebuilt).unwrap();
            assert_eq!(
                rebuilt.read(Registry::clone).unwrap().0,
                writer,
                "seed {seed}"
            );
        }
    }

    #[tokio::test]
    async fn snapshots_truncate_the_log_and_restarts_restore_from_them() {
        let mut config = config();
        config.snapshot_after_operations = 10;
        let (registrar, log) = memory_registrar(config, Arc::new(Metrics::new()));
        for i in 0..25 {
            registrar.submit(admit(&format!("a{i}"))).await.unwrap();
        }
        // Let the truncation task run.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let truncations = log.truncations();
        assert!(truncations.len() >= 2, "{truncations:?}");
        let snapshot = registrar.snapshot_position().unwrap();
        assert_eq!(*truncations.last().unwrap(), snapshot);
        let held = log.entries();
        assert_eq!(held[0].0, snapshot);
        assert!(held.len() < 15, "{} entries held", held.len());

        let (restarted, _) = memory_registrar(
            RegistrarConfig::new("127.0.0.2:5050"),
            Arc::new(Metrics::new()),
        );
        log.replay_into(&restarted).unwrap();
        assert_eq!(
            restarted.read(Registry::clone).unwrap().0,
            registrar.read(Registry::clone).unwrap().0
        );
    }

    #[tokio::test]
    async fn a_corrupt_entry_stops_the_registrar_loudly() {
        let (registrar, _log) = memory_registrar(config(), Arc::new(Metrics::new()));
        registrar
            .apply_learned(1, &encode_batch(1, 1, vec![admit("a")]))
            .unwrap();
        let err = registrar.apply_learned(2, b"\x01{not json").unwrap_err();
        assert_eq!(err.position, 2);
        assert!(registrar
            .apply_learned(3, &encode_batch(1, 2, vec![]))
            .is_err());
        assert!(matches!(
            registrar.submit(admit("b")).await,
            Err(WriteError::Corrupt(_))
        ));
        assert!(registrar.read(|_| ()).is_err());
    }

    #[tokio::test]
    async fn redelivered_entries_are_ignored() {
        let (registrar, _log) = memory_registrar(config(), Arc::new(Metrics::new()));
        let entry = encode_batch(1, 1, vec![admit("a")]);
        registrar.apply_learned(4, &entry).unwrap();
        registrar.apply_learned(4, &entry).unwrap();
        registrar.apply_learned(2, &entry).unwrap();
        assert_eq!(agents(&registrar), ["a"]);
        assert_eq!(registrar.applied_position(), Some(4));
    }

    #[tokio::test]
    async fn a_seal_refuses_writes_through_the_log_and_an_unseal_lifts_it() {
        let (registrar, log) = memory_registrar(config(), Arc::new(Metrics::new()));
        registrar.submit(admit("a")).await.unwrap();
        log.hold();
        let seal = tokio::spawn({
            let registrar = registrar.clone();
            async move { registrar.seal().await }
        });
        while queued_or_in_flight(&registrar) == 0 {
            tokio::task::yield_now().await;
        }
        // Queued behind the seal: refused at once, before reaching the log.
        assert_eq!(
            registrar.submit(admit("b")).await,
            Err(WriteError::Rejected(OperationError::Sealed {
                position: None
            }))
        );
        log.release();
        let (sealed, position) = seal.await.unwrap().unwrap();
        assert_eq!(sealed.sealed, Some(position));
        assert_eq!(
            registrar.submit(admit("b")).await,
            Err(WriteError::Rejected(OperationError::Sealed {
                position: Some(position)
            }))
        );
        // Reads are served; sealing again keeps the first position.
        assert_eq!(agents(&registrar), ["a"]);
        assert_eq!(registrar.seal().await.unwrap().1, position);
        // A member rebuilt from the log is sealed too.
        let (rebuilt, _) = memory_registrar(config(), Arc::new(Metrics::new()));
        log.replay_into(&rebuilt).unwrap();
        assert_eq!(rebuilt.read(|r| r.sealed).unwrap().0, Some(position));
        registrar.unseal().await.unwrap();
        registrar.submit(admit("b")).await.unwrap();
        assert_eq!(agents(&registrar), ["a", "b"]);
    }

    #[tokio::test]
    async fn an_import_in_chunks_is_visible_only_whole_and_every_member_agrees() {
        let mut source = Registry::default();
        for i in 0..40_000 {
            let mut record = agent(&format!("agent-{i:06}"));
            record.hostname = format!("{i:0>200}");
            source.agents.insert(record.id.clone(), record);
        }
        source.weights.insert("dev".into(), 2.0);
        let mut config = config();
        // Snapshots would be due in the middle of the import: they must wait.
        config.snapshot_min_suffix_bytes = 1 << 20;
        config.snapshot_after_operations = 2;
        let (registrar, log) = memory_registrar(config, Arc::new(Metrics::new()));
        registrar.import(&source).await.unwrap();
        let imported = registrar.read(Registry::clone).unwrap().0;
        assert_eq!(imported.agents, source.agents);
        assert_eq!(imported.weights, source.weights);
        assert!(log.appends() >= 3, "{} appends", log.appends());
        let (rebuilt, _) = memory_registrar(
            RegistrarConfig::new("127.0.0.3:5050"),
            Arc::new(Metrics::new()),
        );
        log.replay_into(&rebuilt).unwrap();
        assert_eq!(rebuilt.read(Registry::clone).unwrap().0, imported);
        // A second import (a retry) is refused and changes nothing.
        assert_eq!(
            registrar.import(&source).await,
            Err(WriteError::Rejected(OperationError::NotEmpty))
        );
        assert_eq!(registrar.read(Registry::clone).unwrap().0, imported);
    }

    #[tokio::test]
    async fn an_interrupted_import_is_never_half_visible_and_a_retry_applies_once() {
        let (registrar, _log) = memory_registrar(config(), Arc::new(Metrics::new()));
        let mut source = Registry::default();
        source.weights.insert("dev".into(), 2.0);
        for id in ["a", "b"] {
            source.agents.insert(id.into(), agent(id));
        }
        // Two chunks of an import whose last chunk has not come (its leader died).
        let chunk = |import: u64, index: u32, part: Registry| Operation::ImportChunk {
            import,
            index,
            total: 3,
            part: Box::new(part),
        };
        let mut first = source.clone();
        first.agents.clear();
        registrar.submit(chunk(5, 0, first)).await.unwrap();
        let mut second = Registry::default();
        second.agents.insert("a".into(), agent("a"));
        registrar.submit(chunk(5, 1, second)).await.unwrap();
        let seen = registrar.read(Registry::clone).unwrap().0;
        assert!(!seen.has_data(), "half an import is visible: {seen:?}");
        // The retry stages afresh and applies exactly the source.
        registrar.import(&source).await.unwrap();
        let imported = registrar.read(Registry::clone).unwrap().0;
        assert_eq!(imported.agents, source.agents);
        assert_eq!(imported.weights, source.weights);
        // The old import's last chunk, arriving late, is refused and changes nothing.
        let mut third = Registry::default();
        third.agents.insert("z".into(), agent("z"));
        assert!(matches!(
            registrar.submit(chunk(5, 2, third)).await,
            Err(WriteError::Rejected(OperationError::ImportInterrupted {
                import: 5,
                index: 2
            }))
        ));
        assert_eq!(registrar.read(Registry::clone).unwrap().0, imported);
        assert_eq!(registrar.read(Registry::clone).unwrap().0, imported);
    }

    #[tokio::test]
    async fn an_import_into_a_registry_with_data_is_refused_untouched() {
        let (registrar, _log) = memory_registrar(config(), Arc::new(Metrics::new()));
        registrar
            .submit(Operation::UpdateWeights {
                weights: vec![WeightInfo {
                    role: "ops".into(),
                    weight: 1.0,
                }],
            })
            .await
            .unwrap();
        let before = registrar.read(Registry::clone).unwrap().0;
        let mut source = Registry::default();
        source.agents.insert("a".into(), agent("a"));
        assert_eq!(
            registrar.import(&source).await,
            Err(WriteError::Rejected(OperationError::NotEmpty))
        );
        assert_eq!(registrar.read(Registry::clone).unwrap().0, before);
    }

    /// Store latency and entry sizes at 10,000 and 50,000 agents. Run with
    /// `cargo test --lib measure_store_latency -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a check; prints figures"]
    async fn measure_store_latency_and_entry_sizes() {
        use crate::master::registry::{decode_entry, encode_snapshot};
        for agents in [10_000usize, 50_000] {
            let mut config = config();
            config.max_queued_operations = 2 * agents;
            // A snapshot among the measured stores (unless the byte rule took one
            // during the fill), to see its cost.
            config.snapshot_after_operations = agents as u64 + 250;
            let (registrar, log) = memory_registrar(config, Arc::new(Metrics::new()));
            let started = Instant::now();
            let clients: Vec<_> = (0..agents)
                .map(|i| {
                    let registrar = registrar.clone();
                    tokio::spawn(
                        async move { registrar.submit(admit(&format!("fill-{i:06}"))).await },
                    )
                })
                .collect();
            for client in clients {
                client.await.unwrap().unwrap();
            }
            let fill = started.elapsed();
            let fill_appends = log.appends();
            let registry = registrar.read(Registry::clone).unwrap().0;
            let started = Instant::now();
            let snapshot = encode_snapshot(1, 1, Some(1), &registry);
            let encode = started.elapsed();
            let started = Instant::now();
            decode_entry(1, &snapshot).unwrap();
            let decode = started.elapsed();
            let batch = encode_batch(1, 1, vec![admit("one-more-agent-id-0000000")]);

            let snapshots_before = log.truncations().len();
            let mut samples = Vec::new();
            for i in 0..500 {
                let started = Instant::now();
                registrar
                    .submit(admit(&format!("store-{i}")))
                    .await
                    .unwrap();
                samples.push(started.elapsed());
            }
            let snapshots = log.truncations().len() - snapshots_before;
            samples.sort();
            let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
            println!(
                "{agents} agents: fill {fill:?} in {fill_appends} appends; snapshot {} bytes \
                 ({} bytes/agent), encode {encode:?}, decode {decode:?}; one-admission batch {} bytes; \
                 sequential store p50 {:?} p99 {:?} max {:?} ({snapshots} snapshot(s) among them)",
                snapshot.len(),
                snapshot.len() / agents,
                batch.len(),
                p(0.5),
                p(0.99),
                samples[samples.len() - 1],
            );
        }
    }
}
