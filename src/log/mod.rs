//! The Paxos replicated log: a pure core (replica, coordinator, recovery) that takes
//! messages and ticks in and hands back what to persist and what to send, plus the
//! storage and transport that drive it.

pub mod coordinator;
pub mod frame;
pub mod message;
pub mod node;
pub mod recovery;
pub mod replica;
pub mod simulator;
pub mod storage;
pub mod tcp;
pub mod transport;
pub mod types;
pub mod wal;

pub use message::{Envelope, Message};
pub use node::{Node, NodeConfig, NodeEvent, ProposalOutcome, ProposeError, Ready};
pub use storage::{storage_contract_tests, MemStorage, Storage, StorageError};
pub use transport::{MemTransport, Transport, TransportError};
pub use types::*;
