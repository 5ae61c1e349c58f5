//! `mesos-operator`: runs Mesos master ensembles on Kubernetes or on this machine.

use clap::Parser;

/// Runs Mesos master ensembles safely, one quorum-procedure step at a time.
#[derive(Debug, Parser)]
#[command(name = "mesos-operator", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
