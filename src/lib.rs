//! A Kubernetes operator for Mesos master ensembles, and the master it runs: a Paxos
//! replicated log with a registry on top.
//!
//! The modules follow `ARCHITECTURE.md` (the parts, the dependency rules, where each
//! concept lives); dependencies point one way:
//! `log` ← `master` ← binaries, and `operator` (planner, CRD) ← binaries. The log
//! core knows nothing of the registry or of operators, and the planner has no
//! client and no clock.

pub mod log;
pub mod master;
#[cfg(feature = "operator")]
pub mod operator;

#[cfg(all(test, feature = "operator"))]
mod architecture;
