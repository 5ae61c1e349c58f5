//! The Paxos replicated log: a pure core (replica, coordinator, recovery) that takes
//! messages and ticks in and hands back what to persist and what to send, plus the
//! storage and transport that drive it.
//!
//! # Modules
//!
//! * [`types`]: `MemberId` (an `ip:port`), `LogId`, `Position`, `Proposal`
//!   (`{round, proposer}`, ordered lexicographically, unique per member),
//!   `Action` (`Nop` / `Append` / `Truncate { to }`), `ReplicaStatus`, `Entry`,
//!   `Metadata`, `PersistOp`, `DurableState`, and the seeded `SplitMix64`.
//! * [`message`]: `Envelope` (sender, receiver, log id) and `Message`.
//! * [`replica`]: the acceptor/learner rules (only `Voting` replicas vote; a
//!   learned position is never overwritten).
//! * [`coordinator`]: the proposer (promise round, fill, pipelined batched
//!   multi-Paxos writes, heartbeats and the read lease).
//! * [`recovery`]: recovery of `Empty` replicas, catch-up, auto-initialization and
//!   log-id agreement, with the safety arguments.
//! * [`node`]: one member; **the API a driver uses**.
//! * [`storage`], [`transport`]: traits with in-memory impls, and
//!   [`storage_contract_tests`] for any storage.
//! * [`simulator`]: the deterministic simulator (`examples/log_sim.rs`).
//!
//! # Driving a node
//!
//! The core does no I/O, reads no clock and draws no OS randomness. A driver:
//!
//! ```no_run
//! use mesos_operator::log::{MemStorage, Node, NodeConfig, Storage, MemberId, Transport};
//! # fn demo(mut storage: MemStorage, mut transport: impl Transport) -> anyhow::Result<()> {
//! let members = vec![MemberId::new("10.0.0.1:5050"), MemberId::new("10.0.0.2:5050"),
//!                    MemberId::new("10.0.0.3:5050")];
//! // `seed`: fresh entropy per process start (it is also the node's incarnation).
//! let cfg = NodeConfig::new(members[0].clone(), members.clone(), 2, 0x1234_5678);
//! let mut node = Node::new(cfg, storage.load()?)?;
//! loop {
//!     // 1. Inputs: messages, one tick per tick interval (e.g. 100 ms), proposals.
//!     while let Some(envelope) = transport.receive() {
//!         node.step(envelope);
//!     }
//!     node.tick();
//!     let _ticket = node.propose(b"registry operation".to_vec());
//!     // 2. Output, in this order:
//!     let ready = node.ready();
//!     storage.apply(&ready.persist)?;          // durable (fsync) first,
//!     for envelope in ready.messages {          // then send,
//!         let _ = transport.send(envelope);
//!     }
//!     for (_position, _action) in ready.learned { /* apply to the registry */ }
//!     for _outcome in ready.outcomes { /* answer clients: Ok(position) or ProposeError */ }
//! #   break;
//! }
//! # Ok(()) }
//! ```
//!
//! Nothing in a [`Ready`] may leave the process (messages, client acknowledgements,
//! learned entries) before its `persist` batch is durable: votes and
//! acknowledgements depend on it. There is no separate `advance`: `ready()` hands
//! everything over. If persisting fails the driver must stop (crash): the node's
//! memory is ahead of its disk.
//!
//! Other calls: [`Node::propose_truncate`], [`Node::status`], [`Node::log_id`],
//! [`Node::is_leader`], [`Node::leader`], [`Node::has_read_lease`] (serve reads
//! from the learned state only while true), [`Node::learned_end`],
//! [`Node::begin`], [`Node::end`], [`Node::counters`] (refused messages: non-members,
//! other log ids).

pub mod buffers;
pub mod coordinator;
pub mod driver;
pub mod durable;
pub mod frame;
pub mod message;
pub mod node;
pub mod quorum;
pub mod recovery;
pub mod replica;
pub mod simulator;
pub mod storage;
pub mod tcp;
pub mod tls;
pub mod transport;
pub mod types;
pub mod wal;

pub use message::{Envelope, Message};
pub use node::{Node, NodeConfig, NodeEvent, ProposalOutcome, ProposeError, Ready};
pub use storage::{storage_contract_tests, MemStorage, Storage, StorageError};
pub use transport::{MemTransport, Transport, TransportError};
pub use types::*;
