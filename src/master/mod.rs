//! The Mesos master: flags, leader election over the log, the registry, the HTTP API.
//!
//! What is here so far is the shell that does not depend on the log's internals:
//! [`flags`] (startup validation into a [`flags::MasterConfig`]), the live
//! [`view::MasterView`] the log driver will publish, the HTTP [`http::router`] with
//! its [`api`] types, and [`metrics`]; and the registry: the pure state machine
//! [`registry`], its writer and reader over the log [`registrar`] (with the
//! [`registrar::LogWriter`] boundary the log driver implements), and the Mesos
//! operator API over it, [`operator_api`].

pub mod api;
pub mod export_document;
pub mod flags;
pub mod foreign_log;
pub mod http;
pub mod log_writer;
pub mod memory;
pub mod metrics;
pub mod operator_api;
pub mod raw_log;
pub mod registrar;
pub mod registry;
pub mod server;
pub mod transfer;
pub mod view;
