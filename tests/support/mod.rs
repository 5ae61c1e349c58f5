//! What the multi-process tests share: real `mesos-master` ensembles
//! ([`ensemble::Ensemble`]) and the HTTP client the tests talk to them with
//! ([`http`]). Included by each grouped test binary as `mod support;`.

pub mod ensemble;
pub mod http;
