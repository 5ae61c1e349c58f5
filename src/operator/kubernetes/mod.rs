//! The Kubernetes front end: the controller that reconciles `MesosMasterCluster`
//! objects. [`reconcile`] observes ([`observe`]), asks the planner, applies one
//! step to the objects [`resources`] builds, and records the status; [`jobs`]
//! runs backups and restores as CronJobs and Jobs, [`restarts`] honours
//! `kubectl mmc restart` requests. [`context`], [`metrics`] and [`serve`] are
//! the controller's shared state, its Prometheus metrics and its HTTP endpoint.

pub mod context;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod observe;
pub mod reconcile;
pub mod resources;
pub mod restarts;
pub mod serve;
