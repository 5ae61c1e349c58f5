//! Shared code of the fault tests (`tests/faults_crash.rs`,
//! `tests/faults_partition.rs`): the linearizability checker, real master ensembles
//! (on loopback or in network namespaces), and the recorded client workload.

pub mod cluster;
pub mod http;
pub mod linearizability;
pub mod netlab;
pub mod workload;
