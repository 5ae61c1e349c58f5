//! Day-2 tools (issue #11): registry backup and restore against a running ensemble
//! or the local runtime, and the `kubectl-mmc` plugin's pure parts (status screen,
//! restart guard) and its Kubernetes requests.
//!
//! The master side (`GET /registry/export`, `POST /registry/import`) lives in
//! `src/master`; this module only speaks to it over HTTP, through the same
//! [`crate::operator::master_client::MasterClient`] the local runtime uses.

pub mod backup;
pub mod jobs;
pub mod plugin;
pub mod recovery;
pub mod restart;
pub mod restarts;
pub mod schedule;
pub mod status;
