//! `mesos-operator`: runs Mesos master ensembles on Kubernetes or on this machine.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mesos_operator::operator::crd::{self, SingleMasterExit};
use mesos_operator::operator::planner;

/// Runs Mesos master ensembles safely, one quorum-procedure step at a time.
#[derive(Debug, Parser)]
#[command(name = "mesos-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the MesosMasterCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print the numbered steps a transition between two ensemble sizes takes.
    Plan {
        /// Masters now (odd, 1 to 9).
        #[arg(long, allow_hyphen_values = true)]
        from: i32,
        /// Masters wanted (odd, 1 to 9).
        #[arg(long, allow_hyphen_values = true)]
        to: i32,
        /// How to leave single-master mode.
        #[arg(long, value_enum, default_value_t = ExitMode::Preserve)]
        single_master_exit: ExitMode,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Cluster name used to name the members.
        #[arg(long, default_value = planner::PREVIEW_CLUSTER_NAME)]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExitMode {
    Preserve,
    Wipe,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    // Written, not printed: a closed pipe (`| head`) is an error to report, not a panic.
    let mut stdout = std::io::stdout().lock();
    match command {
        Command::Crd => write!(stdout, "{}", crd::crd_yaml().context("rendering the CRD")?)?,
        Command::Plan {
            from,
            to,
            single_master_exit,
            output,
            name,
        } => {
            let mode = match single_master_exit {
                ExitMode::Preserve => SingleMasterExit::Preserve,
                ExitMode::Wipe => SingleMasterExit::Wipe,
            };
            let steps = planner::preview(&name, from, to, mode)?;
            match output {
                Output::Text => write!(stdout, "{}", planner::render_preview(from, to, &steps))?,
                Output::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&steps)?)?,
            }
        }
    }
    Ok(())
}
