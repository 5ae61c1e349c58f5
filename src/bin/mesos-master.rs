//! `mesos-master`: one member of a Mesos master ensemble.

use clap::Parser;

/// A Mesos master: a replica of the ensemble's Paxos replicated log, with leader
/// election over the log and the registry on top.
#[derive(Debug, Parser)]
#[command(name = "mesos-master", version)]
struct Flags {}

fn main() -> anyhow::Result<()> {
    let _flags = Flags::parse();
    anyhow::bail!(
        "mesos-master cannot serve yet: the durable log and transport are not built (issue 3)"
    )
}
