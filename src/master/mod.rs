//! The Mesos master: flags, leader election over the log, the registry, the HTTP API.
