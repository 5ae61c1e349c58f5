//! The operator: the `MesosMasterCluster` CRD, the quorum-procedure planner, the
//! reconcile loop and the local runtime.

pub mod crd;
pub mod local;
pub mod planner;
