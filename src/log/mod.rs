//! The Paxos replicated log: a pure core (replica, coordinator, recovery) that takes
//! messages and ticks in and hands back what to persist and what to send, plus the
//! storage and transport that drive it.

pub mod frame;
pub mod tcp;
pub mod wal;
