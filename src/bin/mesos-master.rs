//! `mesos-master`: one member of a Mesos master ensemble.
//!
//! Until the log driver lands, the master serves its HTTP endpoints and reports its
//! replica honestly as `EMPTY`, not elected, with no leader.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mesos_operator::master::flags::{self, EnsembleToken, Flags, LogFormat, MasterConfig};
use mesos_operator::master::http::{self, MasterState};
use mesos_operator::master::metrics::Metrics;
use mesos_operator::master::view::{MasterView, SharedMasterView};
use tokio::sync::Notify;
use tracing_subscriber::EnvFilter;

/// After SIGTERM, requests in flight get this long to finish; Kubernetes' default
/// grace period is 30 s, so we stay well inside it.
const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// Exit code of a configuration the master refuses; clap keeps 2 for flags it
/// cannot parse at all.
const EXIT_REFUSED: u8 = 1;

fn main() -> ExitCode {
    let flags = Flags::parse();
    let (config, token) = match flags::load(&flags) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("mesos-master: {err}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    init_tracing(config.log_format);
    match run(config, token) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "mesos-master failed");
            eprintln!("mesos-master: {err:#}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(config: MasterConfig, token: Option<EnsembleToken>) -> anyhow::Result<()> {
    log_effective_config(&config, token.as_ref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve(config))
}

fn log_effective_config(config: &MasterConfig, token: Option<&EnsembleToken>) {
    let masters: Vec<String> = config.masters.iter().map(ToString::to_string).collect();
    tracing::info!(
        listen = %config.listen_addr,
        advertise = %config.advertise_addr,
        quorum = config.quorum,
        masters = %masters.join(","),
        work_dir = %config.work_dir.display(),
        replicated_log_dir = %config.replicated_log_dir.display(),
        log_auto_initialize = config.log_auto_initialize,
        ensemble_token = if token.is_some() { "set" } else { "none" },
        election_timeout_ms = config.election_timeout_ms,
        heartbeat_interval_ms = config.heartbeat_interval_ms,
        "effective configuration"
    );
    if token.is_none() {
        tracing::warn!(
            "no --ensemble_token_file: replica messages cannot prove ensemble membership"
        );
    }
}

async fn serve(config: MasterConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let local_addr = listener
        .local_addr()
        .context("listening socket has no address")?;

    // No log driver yet: the replica is reported as it is, EMPTY and not elected.
    let state = MasterState {
        view: SharedMasterView::new(MasterView::starting(&config)),
        metrics: Arc::new(Metrics::new()),
    };
    let stop = Arc::new(Notify::new());
    let stopped = Arc::clone(&stop);
    let mut server = tokio::spawn(http::serve(listener, http::router(state), async move {
        stopped.notified().await
    }));
    tracing::info!(addr = %local_addr, "serving HTTP");

    tokio::select! {
        finished = &mut server => {
            finished.context("HTTP server task failed")?;
            anyhow::bail!("HTTP server stopped without being asked to");
        }
        signal = shutdown_signal() => tracing::info!(signal, "shutting down"),
    }
    // notify_one keeps a permit if the server is not waiting yet, so none is lost.
    stop.notify_one();
    match tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), server).await {
        Ok(finished) => finished.context("HTTP server task failed")?,
        Err(_) => tracing::warn!(
            grace_ms = SHUTDOWN_GRACE_MS,
            "requests still in flight after the grace period; exiting"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM with the signal's name. If a handler cannot be
/// installed, that signal is simply not awaited (the default action still applies).
async fn shutdown_signal() -> &'static str {
    let interrupt = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(err) => {
                tracing::warn!(error = %err, "cannot handle SIGINT");
                std::future::pending().await
            }
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
                "SIGTERM"
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot handle SIGTERM");
                std::future::pending().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<&'static str>();
    tokio::select! {
        name = interrupt => name,
        name = terminate => name,
    }
}
