//! The operator: the `MesosMasterCluster` CRD, the quorum-procedure planner, the
//! reconcile loop and the local runtime.

pub mod context;
pub mod crd;
pub mod day2;
pub mod local;
pub mod metrics;
pub mod observe;
pub mod planner;
pub mod reconcile;
pub mod resources;
pub mod serve;
pub mod status;
pub mod transfer;
