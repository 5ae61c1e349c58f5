//! The tests that run real `mesos-master` processes, or the master's HTTP server,
//! in one binary: each test binary links the whole crate, and linking is much of a
//! fresh build.
//!
//! The tests run in parallel threads. What keeps them apart:
//! - addresses: every ensemble takes its own port (`support::ensemble`), shared by
//!   its members on 127.0.0.1, .2, ...; single masters take theirs the same way.
//!   The partition test alone uses network namespaces (`h6f-*`, 10.250.0.0/24),
//!   and `peer_tls::local` its fixed port 28210;
//! - files: every ensemble and test has its own temporary directory;
//! - no test changes the environment or the working directory of the process.

// Shared with the checker's own tests (`tests/pure`); not every part is used here.
#[allow(dead_code)]
#[path = "../faults_common/mod.rs"]
mod faults_common;
#[path = "../reconcile_common/mod.rs"]
mod reconcile_common;
#[path = "../support/mod.rs"]
mod support;

mod ensemble;
mod faults_crash;
mod faults_partition;
mod master_failover;
mod master_foreign_log;
mod master_http;
mod master_security;
mod master_startup;
mod peer_tls;
mod registry_ensemble;
mod storage_faults;
