//! Durable state behind a trait (openraft style): load everything at start, apply
//! a batch of [`PersistOp`]s durably. The in-memory impl serves the simulator; the
//! durable WAL must pass [`storage_contract_tests`] too.

use super::types::{
    Action, DurableState, Entry, MemberId, Metadata, PersistOp, Proposal, ReplicaStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
}

pub trait Storage {
    /// Everything durable, as of the last successful [`Storage::apply`].
    fn load(&self) -> Result<DurableState, StorageError>;
    /// Applies `ops` in order; returns only once they are durable.
    fn apply(&mut self, ops: &[PersistOp]) -> Result<(), StorageError>;
}

/// Keeps the durable image in memory (survives simulated crashes, not wipes).
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    pub state: DurableState,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemStorage {
    fn load(&self) -> Result<DurableState, StorageError> {
        Ok(self.state.clone())
    }

    fn apply(&mut self, ops: &[PersistOp]) -> Result<(), StorageError> {
        for op in ops {
            self.state.apply(op);
        }
        Ok(())
    }
}

/// The contract every [`Storage`] must meet. `fresh` makes an empty store;
/// `reopen` simulates a restart of the given store (for the in-memory impl, the
/// identity). Returns a description of the first broken rule.
pub fn storage_contract_tests<S: Storage>(
    mut fresh: impl FnMut() -> S,
    mut reopen: impl FnMut(S) -> S,
) -> Result<(), String> {
    let check = |cond: bool, what: &str| if cond { Ok(()) } else { Err(what.to_string()) };
    let io = |e: StorageError| e.to_string();

    // A fresh store is an Empty replica with nothing in it.
    let s = fresh();
    let st = s.load().map_err(io)?;
    check(st == DurableState::default(), "fresh store is not empty")?;

    // Operations apply in order and survive a reopen.
    let mut s = fresh();
    let p = |round| Proposal {
        round,
        proposer: MemberId::new("10.0.0.1:5050"),
    };
    let meta = Metadata {
        status: ReplicaStatus::Voting,
        log_id: Some(super::types::LogId(7)),
        promised: Some(p(3)),
        begin: 0,
        learned_below: 0,
    };
    let e = |pos, round, learned| Entry {
        position: pos,
        accepted: p(round),
        action: Action::Append(vec![pos as u8].into()),
        learned,
    };
    s.apply(&[
        PersistOp::SetMetadata(meta.clone()),
        PersistOp::PutEntry(e(2, 1, false)),
        PersistOp::PutEntry(e(0, 1, true)),
        PersistOp::PutEntry(e(1, 1, true)),
    ])
    .map_err(io)?;
    s.apply(&[PersistOp::PutEntry(e(2, 3, true))]).map_err(io)?;
    let s = reopen(s);
    let st = s.load().map_err(io)?;
    check(st.metadata == meta, "metadata not kept")?;
    check(
        st.entries == vec![e(0, 1, true), e(1, 1, true), e(2, 3, true)],
        "entries not sorted, replaced or kept",
    )?;

    // Truncation drops exactly the positions below the point.
    let mut s = s;
    s.apply(&[PersistOp::TruncateBelow(2)]).map_err(io)?;
    let s = reopen(s);
    let st = s.load().map_err(io)?;
    check(st.entries == vec![e(2, 3, true)], "truncation wrong")?;

    // Empty batches are fine.
    let mut s = s;
    s.apply(&[]).map_err(io)?;
    check(
        s.load().map_err(io)?.entries.len() == 1,
        "empty batch changed state",
    )?;

    // A learned prefix marks every entry under it learned, and none above.
    let mut s = s;
    let marked = Metadata {
        learned_below: 4,
        ..meta.clone()
    };
    s.apply(&[
        PersistOp::PutEntry(e(3, 3, false)),
        PersistOp::PutEntry(e(5, 3, false)),
        PersistOp::SetMetadata(marked.clone()),
    ])
    .map_err(io)?;
    let s = reopen(s);
    let st = s.load().map_err(io)?;
    check(st.metadata == marked, "learned prefix not kept")?;
    check(
        st.entries == vec![e(2, 3, true), e(3, 3, true), e(5, 3, false)],
        "learned prefix does not mark exactly the entries under it",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_meets_the_contract() {
        storage_contract_tests(MemStorage::new, |s| s).unwrap();
    }
}
