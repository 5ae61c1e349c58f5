//! `mesos-operator`: runs Mesos master ensembles on Kubernetes or on this machine.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mesos_operator::operator::crd::{self, SingleMasterExit};
use mesos_operator::operator::local;
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
    /// Run the ensemble as local mesos-master processes on 127.0.0.x, driven by
    /// the same planner, with a live view of members and transitions.
    Local {
        /// A MesosMasterCluster YAML file; edit `spec.replicas` in it to start a
        /// transition. Without it: the spec last used in the state dir, or 3 masters.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Everything the runtime remembers: status.yaml, member flags, work dirs.
        #[arg(long, default_value = "./mesos-local")]
        state_dir: PathBuf,
        /// Member i listens on 127.0.0.(i+1):BASE_PORT.
        #[arg(long, default_value_t = crd::DEFAULT_PORT)]
        base_port: u16,
        /// The mesos-master binary (default: next to this executable).
        #[arg(long)]
        master_binary: Option<PathBuf>,
        /// An extra mesos-master flag, e.g. --master-arg=--raw_log_api (repeatable).
        #[arg(long = "master-arg", allow_hyphen_values = true)]
        master_args: Vec<String>,
        /// Milliseconds between observations.
        #[arg(long, default_value_t = 150)]
        poll_ms: u64,
        /// How to show progress: live (redrawn, default on a TTY), lines, or quiet.
        #[arg(long, value_enum)]
        display: Option<DisplayMode>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DisplayMode {
    Live,
    Lines,
    Quiet,
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
        Command::Local {
            spec,
            state_dir,
            base_port,
            master_binary,
            master_args,
            poll_ms,
            display,
        } => {
            drop(stdout);
            local::run(local::LocalOptions {
                state_dir,
                base_port,
                spec_file: spec,
                master_binary: master_binary.unwrap_or_else(local::default_master_binary),
                master_args,
                poll_interval: std::time::Duration::from_millis(poll_ms),
                display: match display {
                    None => local::Display::detect(),
                    Some(DisplayMode::Live) => local::Display::Live,
                    Some(DisplayMode::Lines) => local::Display::Lines,
                    Some(DisplayMode::Quiet) => local::Display::Quiet,
                },
            })?;
        }
    }
    Ok(())
}
