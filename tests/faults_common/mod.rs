//! Shared code of the fault tests (`masters/faults_crash.rs`,
//! `masters/faults_partition.rs`) and of the checker's own tests
//! (`pure/faults_checker.rs`): the linearizability checker, network namespaces for
//! the partitions, and the recorded client workload. The ensembles are
//! `support::ensemble`'s.

pub mod linearizability;
pub mod netlab;
pub mod workload;
