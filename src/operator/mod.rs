//! The operator, in layers; each uses only the ones above it in this list (see
//! `ARCHITECTURE.md`):
//!
//! 1. [`api`]: every type, condition, label and annotation written into
//!    Kubernetes objects (the `MesosMasterCluster` CRD and its status).
//! 2. Pure decisions, no client and no clock: [`planner`] (the next step of a
//!    quorum procedure), [`status`] (the status both runtimes write), [`restart`]
//!    (may a member be restarted now), [`recovery`] (quorum loss: what survives,
//!    which request to take).
//! 3. The one client of a master's HTTP API, [`master_client`], and the
//!    procedures over it and files: [`backup`] (registry backups and restores),
//!    [`atomic_file`] (the one way a file is replaced).
//! 4. Front ends that observe, ask layer 2, apply one step and record:
//!    [`kubernetes`] (the reconcile loop), [`local`] (`mesos-operator local`),
//!    [`cli`] (the `kubectl mmc` plugin).

pub mod api;
pub mod atomic_file;
pub mod backup;
pub mod cli;
pub mod kubernetes;
pub mod local;
pub mod master_client;
pub mod planner;
pub mod recovery;
pub mod restart;
#[cfg(test)]
mod shells_agree;
pub mod status;
