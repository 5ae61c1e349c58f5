//! The day-2 commands of the binary: `mesos-operator backup` / `restore`, and
//! `kubectl-mmc` (this binary under that name: `ln -s $(which mesos-operator)
//! /usr/local/bin/kubectl-mmc`, then `kubectl mmc status prod`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mesos_operator::operator::api::backup::MAX_KEEP;
use mesos_operator::operator::backup;
use mesos_operator::operator::cli::plugin;
use mesos_operator::operator::master_client::{HttpMasterClient, Timeouts};

/// Where the masters are: a running ensemble's addresses or a local runtime.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct Ensemble {
    /// The ensemble's members, ip:port,ip:port (any of them; the leader is found
    /// through /log/status).
    #[arg(long)]
    pub masters: Option<String>,
    /// A `mesos-operator local` state directory: its members are read from
    /// members/<i>/flags.json.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

impl Ensemble {
    fn members(&self) -> anyhow::Result<Vec<SocketAddr>> {
        match (&self.masters, &self.state_dir) {
            (Some(list), _) => {
                let masters = backup::parse_masters(list)
                    .map_err(|error| anyhow::anyhow!("--masters: {error}"))?;
                anyhow::ensure!(!masters.is_empty(), "--masters: no members given");
                Ok(masters)
            }
            (None, Some(dir)) => Ok(mesos_operator::operator::local::members::local_members(
                dir,
            )?),
            (None, None) => anyhow::bail!("give --masters or --state-dir"),
        }
    }
}

/// `mesos-operator backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub ensemble: Ensemble,
    /// Directory the backup is written into as registry-<log id>-<position>.json
    /// (default with --state-dir: <state-dir>/backups).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// After the backup, delete the backups of the same log id in the directory
    /// beyond the N at the highest positions (other logs' backups stay).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_KEEP)))]
    pub keep: Option<u32>,
}

/// `mesos-operator restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// A backup file written by `backup`. It is checked (format, checksum, name)
    /// before anything is sent.
    #[arg(long)]
    pub from: PathBuf,
    #[command(flatten)]
    pub ensemble: Ensemble,
}

pub fn run_backup(args: &BackupArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let members = args.ensemble.members()?;
    let dir = match (&args.out, &args.ensemble.state_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(state_dir)) => state_dir.join("backups"),
        (None, None) => anyhow::bail!("--out is required with --masters"),
    };
    let path = block_on(backup::take_backup(&masters_client(), &members, &dir))??;
    writeln!(out, "{}", path.display())?;
    if let Some(keep) = args.keep {
        let verified = backup::read_backup(&path)?;
        for removed in backup::prune_backups(&dir, verified.log_id, keep)? {
            writeln!(out, "deleted {}", removed.display())?;
        }
    }
    Ok(())
}

pub fn run_restore(args: &RestoreArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    // Verified before the members are even looked up: a bad file is refused
    // with one line however the ensemble is reached.
    let verified = backup::read_backup(&args.from)?;
    let members = args.ensemble.members()?;
    block_on(backup::restore(&masters_client(), &members, &args.from))??;
    writeln!(
        out,
        "restored the registry of log {} at position {} (sha256 {}) from {}",
        verified.log_id,
        verified.position,
        verified.sha256,
        args.from.display()
    )?;
    Ok(())
}

/// The backup commands are handed any member and talk to masters the way the local
/// runtime does: loopback or nearby members, a user waiting at a terminal.
fn masters_client() -> HttpMasterClient {
    HttpMasterClient::new(Timeouts::LOCAL)
}

/// Runs one async call of the blocking commands to its end.
fn block_on<F: std::future::Future>(call: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    Ok(runtime.block_on(call))
}

/// Whether this process was started as the kubectl plugin.
pub fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .and_then(|arg0| {
            Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().starts_with("kubectl-mmc"))
        })
        .unwrap_or(false)
}

/// `kubectl mmc`: MesosMasterClusters at a glance, and day-2 requests.
#[derive(Debug, Parser)]
#[command(name = "kubectl-mmc", bin_name = "kubectl mmc", version)]
pub struct PluginCli {
    /// Namespace of the MesosMasterCluster (default: the kubeconfig's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// Talk to a `mesos-operator local` runtime in this state directory instead
    /// of Kubernetes.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Members, quorum, leader and the transition's steps on one screen.
    Status {
        /// The MesosMasterCluster (not with --state-dir).
        name: Option<String>,
    },
    /// Preview the steps a change of `replicas` would take; nothing is changed.
    Plan {
        name: Option<String>,
        /// Masters wanted (odd, 1 to 9).
        #[arg(long)]
        replicas: i32,
    },
    /// Ask the operator to restart one member (`<cluster>-<ordinal>`), refused if
    /// it would leave fewer ready masters than the quorum.
    Restart {
        member: String,
        /// The MesosMasterCluster, when it is not the member's name without its
        /// `-<ordinal>`.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Back the registry up into a directory.
    Backup {
        name: Option<String>,
        /// With Kubernetes: masters reachable from here (e.g. through
        /// `kubectl port-forward svc/<name>-leader 5050`).
        #[arg(long)]
        masters: Option<String>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Guarded recovery of a cluster that lost its quorum: rebuild the ensemble
    /// from the surviving MEMBER, which must report --log-id (both as `status`
    /// shows them). Every other member's old state is wiped.
    Recover {
        member: String,
        /// The log id (hex) the member reports, as `status` shows it.
        #[arg(long)]
        log_id: String,
    },
}

fn required_name(name: Option<String>) -> anyhow::Result<String> {
    name.context("name the MesosMasterCluster (or give --state-dir for the local runtime)")
}

/// `prod-2` -> `prod`.
fn cluster_of(member: &str) -> Option<&str> {
    let (cluster, ordinal) = member.rsplit_once('-')?;
    (!cluster.is_empty() && ordinal.parse::<u32>().is_ok()).then_some(cluster)
}

pub fn run_plugin(cli: PluginCli, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(state_dir) = &cli.state_dir {
        return run_local_plugin(state_dir, cli.command, out);
    }
    if let PluginCommand::Backup {
        masters: Some(masters),
        out: dir,
        ..
    } = &cli.command
    {
        let dir = dir.clone().context("--out is required with --masters")?;
        return run_backup(
            &BackupArgs {
                ensemble: Ensemble {
                    masters: Some(masters.clone()),
                    state_dir: None,
                },
                out: Some(dir),
                keep: None,
            },
            out,
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|error| {
            anyhow::anyhow!(
                "no usable Kubernetes configuration (set KUBECONFIG, or use --state-dir for the local runtime): {error}"
            )
        })?;
        let namespace = cli
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        run_kube_plugin(&client, &namespace, cli.command, out).await
    })
}

/// The Kubernetes side, separate so the tests can hand it a fake API.
pub async fn run_kube_plugin(
    client: &kube::Client,
    namespace: &str,
    command: PluginCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        PluginCommand::Status { name } => {
            let name = required_name(name)?;
            write!(out, "{}", plugin::status(client, namespace, &name).await?)?;
        }
        PluginCommand::Plan { name, replicas } => {
            let name = required_name(name)?;
            write!(
                out,
                "{}",
                plugin::plan(client, namespace, &name, replicas).await?
            )?;
        }
        PluginCommand::Restart { member, cluster } => {
            let cluster = match cluster {
                Some(cluster) => cluster,
                None => cluster_of(&member)
                    .with_context(|| {
                        format!("{member} is not <cluster>-<ordinal>; give --cluster")
                    })?
                    .to_owned(),
            };
            plugin::request_restart(client, namespace, &cluster, &member).await?;
            writeln!(
                out,
                "asked the operator to restart {member} (annotation {} on mesosmastercluster {namespace}/{cluster})",
                mesos_operator::operator::api::ANNOTATION_RESTART_MEMBER
            )?;
        }
        PluginCommand::Backup { name, .. } => {
            let name = required_name(name)?;
            anyhow::bail!(
                "scheduled backups of {namespace}/{name} are set in its spec.backup (a CronJob writing to the PVC {name}-backups); for one now, from here: kubectl -n {namespace} port-forward svc/{name}-leader 5050 & kubectl mmc backup {name} --masters 127.0.0.1:5050 --out DIR"
            );
        }
        PluginCommand::Recover { member, log_id } => {
            let cluster = cluster_of(&member)
                .with_context(|| format!("{member} is not <cluster>-<ordinal>"))?
                .to_owned();
            let value =
                plugin::request_recovery(client, namespace, &cluster, &member, &log_id).await?;
            writeln!(
                out,
                "asked the operator to recover {namespace}/{cluster} from {member} (annotation {}={value}): it exports what {member} learned, deletes every member's pod and volume (the old log is fenced), starts them on a new log and imports the export; follow it with `kubectl mmc status {cluster} -n {namespace}`",
                mesos_operator::operator::api::recovery::ANNOTATION_RECOVER_FROM
            )?;
        }
    }
    Ok(())
}

fn run_local_plugin(
    state_dir: &Path,
    command: PluginCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        PluginCommand::Status { .. } => write!(out, "{}", plugin::local_status(state_dir)?)?,
        PluginCommand::Plan { replicas, .. } => {
            write!(out, "{}", plugin::local_plan(state_dir, replicas)?)?
        }
        PluginCommand::Backup { out: dir, .. } => run_backup(
            &BackupArgs {
                ensemble: Ensemble {
                    masters: None,
                    state_dir: Some(state_dir.to_owned()),
                },
                out: dir,
                keep: None,
            },
            out,
        )?,
        PluginCommand::Restart { member, .. } => {
            plugin::local_request_restart(state_dir, &member)?;
            writeln!(
                out,
                "asked the local runtime to restart {member} ({})",
                mesos_operator::operator::local::restart::request_file(state_dir).display()
            )?;
        }
        PluginCommand::Recover { member, log_id } => write!(
            out,
            "{}",
            plugin::local_recover(state_dir, &member, &log_id)?
        )?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_name_names_its_cluster() {
        assert_eq!(cluster_of("prod-2"), Some("prod"));
        assert_eq!(cluster_of("my-prod-10"), Some("my-prod"));
        assert_eq!(cluster_of("prod"), None);
        assert_eq!(cluster_of("prod-x"), None);
        assert_eq!(cluster_of("-1"), None);
    }
}
