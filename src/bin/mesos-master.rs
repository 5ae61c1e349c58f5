//! `mesos-master`: one member of a Mesos master ensemble.
//!
//! Thin: flags, tracing, then [`server::run`] until SIGTERM or SIGINT.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mesos_operator::master::flags::{self, EnsembleToken, Flags, LogFormat, MasterConfig};
use mesos_operator::master::server;
use tracing_subscriber::EnvFilter;

/// Exit code of a configuration the master refuses; clap keeps 2 for flags it
/// cannot parse at all.
const EXIT_REFUSED: u8 = 1;

fn main() -> ExitCode {
    // Before anything allocates: see `master::memory` for why and what it gained.
    mesos_operator::master::memory::keep_freed_memory_for_reuse();
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
            // One plain line on stderr (where the logs go too): the reason a user
            // or the operator's status needs, not a second copy in the log format.
            eprintln!("mesos-master: {}", one_line(&err));
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the
/// message before it already quotes (our errors often say "...: {source}").
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
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
    runtime.block_on(serve(config, token))
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

async fn serve(config: MasterConfig, token: Option<EnsembleToken>) -> anyhow::Result<()> {
    server::run(
        config,
        token,
        async {
            let signal = shutdown_signal().await;
            tracing::info!(signal, "shutting down");
        },
        |master| tracing::info!(addr = %master.local_addr, "serving HTTP and the replica protocol"),
    )
    .await?;
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
