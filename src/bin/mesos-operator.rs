//! `mesos-operator`: runs Mesos master ensembles on Kubernetes or on this machine.
//! `run` is the Kubernetes controller; `crd` and `plan` print; `backup` and
//! `restore` handle registry backups. Invoked as `kubectl-mmc` (a symlink or copy
//! under that name) it is the kubectl plugin (see `cli/day2.rs`).

#[path = "cli/day2.rs"]
mod day2;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mesos_operator::operator::api::{self, SingleMasterExit};
use mesos_operator::operator::kubernetes::context::Context as OperatorContext;
use mesos_operator::operator::kubernetes::metrics::Metrics;
use mesos_operator::operator::kubernetes::reconcile;
use mesos_operator::operator::kubernetes::serve::{self, Readiness};
use mesos_operator::operator::local;
use mesos_operator::operator::master_client::{HttpMasterClient, Timeouts};
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
    /// Watch MesosMasterClusters and reconcile them (in a cluster, or against the
    /// current kubeconfig).
    Run(RunArgs),
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
        #[arg(long, default_value_t = api::DEFAULT_PORT)]
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
        /// Seconds of quorum loss before a recovery request is acted on (default:
        /// the spec's `recovery.quorumLossSeconds`, 300).
        #[arg(long)]
        quorum_loss_seconds: Option<u64>,
        /// How to show progress: live (redrawn, default on a TTY), lines, or quiet.
        #[arg(long, value_enum)]
        display: Option<DisplayMode>,
        /// TLS between the members: make a CA and a member certificate in
        /// <state-dir>/tls/ (once) and start every master with --peer_tls=required.
        #[arg(long)]
        tls: bool,
    },
    /// Export the registry from the leader, check it, and write it as
    /// <out>/registry-<log id>-<position>.json.
    Backup(day2::BackupArgs),
    /// Check a backup file and import it through the leader of an ensemble whose
    /// registry is empty.
    Restore(day2::RestoreArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Where /healthz and /readyz are served.
    #[arg(
        long,
        env = "MESOS_OPERATOR_HEALTH_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    health_addr: SocketAddr,
    /// Where Prometheus /metrics is served.
    #[arg(
        long,
        env = "MESOS_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    metrics_addr: SocketAddr,
    /// Namespace whose MesosMasterClusters are reconciled; empty for all.
    #[arg(long, env = "MESOS_OPERATOR_WATCH_NAMESPACE", default_value = "")]
    watch_namespace: String,
    /// Log lines as text for people or JSON for machines (verbosity: RUST_LOG).
    #[arg(long, env = "MESOS_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    let result = if day2::invoked_as_plugin() {
        day2::run_plugin(
            <day2::PluginCli as Parser>::parse(),
            &mut std::io::stdout().lock(),
        )
    } else {
        run(Cli::parse().command)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    if let Command::Run(args) = command {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        return runtime.block_on(run_operator(args));
    }
    // Written, not printed: a closed pipe (`| head`) is an error to report, not a panic.
    let mut stdout = std::io::stdout().lock();
    match command {
        Command::Crd => write!(stdout, "{}", api::crd_yaml().context("rendering the CRD")?)?,
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
        Command::Run(_) => unreachable!("handled above"),
        Command::Backup(args) => day2::run_backup(&args, &mut stdout)?,
        Command::Restore(args) => day2::run_restore(&args, &mut stdout)?,
        Command::Local {
            spec,
            state_dir,
            base_port,
            master_binary,
            mut master_args,
            poll_ms,
            display,
            quorum_loss_seconds,
            tls,
        } => {
            drop(stdout);
            if tls {
                master_args.extend(
                    local::certs::local_tls_flags(&state_dir)
                        .context("preparing TLS between the members")?,
                );
            }
            local::run(local::LocalOptions {
                state_dir,
                base_port,
                spec_file: spec,
                master_binary: master_binary.unwrap_or_else(local::default_master_binary),
                master_args,
                poll_interval: std::time::Duration::from_millis(poll_ms),
                quorum_loss_seconds,
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run_operator(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    // One line, before anything is bound: without a configuration there is
    // nothing to operate.
    let client = kube::Client::try_default().await.map_err(|error| {
        anyhow::anyhow!(
            "no usable Kubernetes configuration (neither in-cluster nor a kubeconfig; set KUBECONFIG or run in a pod with a service account): {}",
            one_line(&error.to_string())
        )
    })?;
    let metrics = Metrics::default();
    let readiness = Readiness::default();
    let health = serve::spawn(args.health_addr, serve::health_router(readiness.clone()))
        .await
        .with_context(|| format!("cannot serve health checks on {}", args.health_addr))?;
    let metrics_at = serve::spawn(args.metrics_addr, serve::metrics_router(metrics.register()))
        .await
        .with_context(|| format!("cannot serve metrics on {}", args.metrics_addr))?;
    let namespace = (!args.watch_namespace.is_empty()).then_some(args.watch_namespace);
    tracing::info!(%health, metrics = %metrics_at, namespace = ?namespace, "mesos-operator starting");
    let ctx = Arc::new(OperatorContext::new(
        client,
        Arc::new(HttpMasterClient::new(Timeouts::KUBERNETES)),
        metrics,
        std::env::var("HOSTNAME").ok(),
    ));
    reconcile::run_controller(ctx, namespace, readiness)
        .await
        .map_err(|error| anyhow::anyhow!("cannot watch MesosMasterClusters (is the CRD installed, may the operator list them?): {error}"))?;
    tracing::info!("mesos-operator stopped");
    Ok(())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
