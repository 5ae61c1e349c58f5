//! The `kubectl mmc` plugin: [`plugin`] turns its subcommands into requests (an
//! annotation on the MesosMasterCluster, a file in a local state dir) after the
//! same guards the runtimes apply; [`screen`] renders a status for a terminal.

pub mod plugin;
pub mod screen;
