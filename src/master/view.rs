//! The master's live view of itself: what the HTTP endpoints and metrics report.
//! The log driver owns the figures and publishes them here; readers never block it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::api::{LogStatus, ReplicaStatus};
use super::flags::MasterConfig;

/// One consistent snapshot of the master's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterView {
    /// This member's replica status.
    pub replica_status: ReplicaStatus,
    /// The log's identity, once the replica belongs to one.
    pub log_id: Option<u64>,
    /// First position still held (earlier ones were truncated).
    pub begin_position: u64,
    /// Last position this replica holds.
    pub end_position: u64,
    /// Highest position this replica knows to be learned.
    pub learned_position: u64,
    /// The `--quorum` this member runs with.
    pub quorum: usize,
    /// The `--masters` whitelist.
    pub masters: Vec<SocketAddr>,
    /// This member's advertised address (its identity in `masters`).
    pub advertise_addr: SocketAddr,
    /// The leader's advertised address, when known.
    pub leader: Option<SocketAddr>,
    /// Whether this member leads. Only the election code may set it: a master that
    /// claims leadership it does not hold sends writes and clients astray.
    pub elected: bool,
    /// Whether this member leads and holds a read lease: reads from its learned
    /// state cannot be stale (no other leader can have been elected meanwhile).
    pub read_lease: bool,
    /// Replica links run over TLS (`--peer_tls`).
    pub peer_tls: bool,
}

impl MasterView {
    /// What a master knows before its log has said anything: an empty replica, no
    /// leader, not elected.
    pub fn starting(config: &MasterConfig) -> Self {
        Self {
            replica_status: ReplicaStatus::Empty,
            log_id: None,
            begin_position: 0,
            end_position: 0,
            learned_position: 0,
            quorum: config.quorum,
            masters: config.masters.clone(),
            advertise_addr: config.advertise_addr,
            leader: None,
            elected: false,
            read_lease: false,
            peer_tls: config.peer_tls.is_some(),
        }
    }

    /// The registry can serve only from a replica that has caught up.
    pub fn recovered(&self) -> bool {
        self.replica_status == ReplicaStatus::Voting
    }

    /// The `/log/status` answer.
    pub fn log_status(&self) -> LogStatus {
        LogStatus {
            member: self.advertise_addr,
            status: self.replica_status,
            log_id: self.log_id,
            begin: self.begin_position,
            end: self.end_position,
            learned: self.learned_position,
            quorum: self.quorum,
            masters: self.masters.clone(),
            leader: self.leader,
            elected: self.elected,
            peer_tls: self.peer_tls,
        }
    }
}

/// The shared, updatable view: the log driver calls [`SharedMasterView::update`],
/// the HTTP handlers call [`SharedMasterView::get`]. Cloning shares the same view.
#[derive(Debug, Clone)]
pub struct SharedMasterView {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sender: watch::Sender<MasterView>,
    started_at: Instant,
}

impl SharedMasterView {
    pub fn new(initial: MasterView) -> Self {
        Self {
            inner: Arc::new(Inner {
                sender: watch::Sender::new(initial),
                started_at: Instant::now(),
            }),
        }
    }

    /// A copy of the current view.
    pub fn get(&self) -> MasterView {
        self.inner.sender.borrow().clone()
    }

    /// Changes the view in place; watchers are woken only when something changed.
    pub fn update(&self, change: impl FnOnce(&mut MasterView)) {
        self.inner.sender.send_if_modified(|view| {
            let before = view.clone();
            change(view);
            *view != before
        });
    }

    /// A receiver that wakes on each change, for code that waits for a status
    /// (tests waiting for `Voting`, the registry waiting for a leader).
    pub fn subscribe(&self) -> watch::Receiver<MasterView> {
        self.inner.sender.subscribe()
    }

    /// Time since this view (and so the master's serving life) began.
    pub fn uptime(&self) -> Duration {
        self.inner.started_at.elapsed()
    }
}
