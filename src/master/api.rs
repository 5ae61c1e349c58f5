//! Types of the master's HTTP API that other programs read, chiefly the operator:
//! it deserializes exactly these types, so a field renamed here is renamed there.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A replica's status, as the Mesos replicated log names it. Only a `Voting`
/// replica takes part in quorums; the log driver maps its own status onto this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicaStatus {
    /// Never initialized, or wiped.
    Empty,
    /// In the first phase of auto-initialization.
    Starting,
    /// Catching up from voting replicas.
    Recovering,
    /// Caught up; may take part in quorums.
    Voting,
}

impl fmt::Display for ReplicaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "EMPTY",
            Self::Starting => "STARTING",
            Self::Recovering => "RECOVERING",
            Self::Voting => "VOTING",
        })
    }
}

/// `GET /log/status`: this member's view of its replica and of the ensemble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStatus {
    /// The answering member's advertised address (its entry in `masters`), so a
    /// reader behind a Service still knows whom it asked.
    pub member: SocketAddr,
    /// This member's replica status.
    pub status: ReplicaStatus,
    /// The log's identity, drawn at initialization; `None` while the replica is
    /// empty (it belongs to no log yet).
    pub log_id: Option<u64>,
    /// First position still held (earlier ones were truncated).
    pub begin: u64,
    /// Last position this replica holds.
    pub end: u64,
    /// Highest position this replica knows to be learned (chosen).
    pub learned: u64,
    /// The `--quorum` this member runs with.
    pub quorum: usize,
    /// The `--masters` whitelist this member runs with.
    pub masters: Vec<SocketAddr>,
    /// The leading master's advertised address, when one is known.
    pub leader: Option<SocketAddr>,
    /// Whether this member is the leader.
    pub elected: bool,
    /// Whether replica links to and from this member run over TLS (`--peer_tls`).
    /// Absent from masters that predate it: read as false.
    #[serde(default)]
    pub peer_tls: bool,
}
