//! The operator: the `MesosMasterCluster` CRD, the quorum-procedure planner, the
//! reconcile loop and the local runtime.

pub mod crd;
pub mod planner;
