//! One master process: the durable log, its driver, the replica links and the HTTP
//! server, all on one port (the first bytes of a connection tell the replica
//! protocol from HTTP, as Mesos serves both on `--port`).

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::log::driver::{self, Delivery, DriverOptions, LogHandle, LogState};
use crate::log::durable::{DurableError, WalStorage};
use crate::log::frame::FrameKey;
use crate::log::node::{Node, NodeConfig, DEFAULT_HEARTBEAT_INTERVAL_TICKS};
use crate::log::tcp::{self, LinkConfig, LinkCounters, Sniffed};
use crate::log::wal::WalOptions;
use crate::log::{Action, MemberId};

use super::api::ReplicaStatus;
use super::flags::{EnsembleToken, MasterConfig};
use super::foreign_log;
use super::http::{self, MasterState};
use super::log_writer::DriverLogWriter;
use super::metrics::Metrics;
use super::raw_log;
use super::registrar::{Registrar, RegistrarConfig};
use super::view::{MasterView, SharedMasterView};

/// Without `--ensemble_token_file` every member proves knowledge of this public
/// key: frames are still checksummed and bound to their connection, but anyone
/// who knows the whitelist can speak for a member. The master warns about it.
const NO_TOKEN_KEY: &[u8] = b"mesos-operator: no ensemble token configured";

/// A follower's lease grant must outlast the leader's lease by a margin that
/// covers clock-rate drift between members: the lease is this fraction (in
/// percent) of the minimum election timeout.
const LEASE_PERCENT_OF_ELECTION_TIMEOUT: u64 = 70;

/// Back-off after a failed accept (e.g. out of file descriptors).
const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

/// How often the master looks at what peers say about their log id. Reports arrive
/// with the peers' frames (heartbeats, every few hundred ms); a stray found a
/// fraction of a second later costs nothing, it cannot vote meanwhile.
const FOREIGN_LOG_CHECK_INTERVAL_MS: u64 = 250;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("refusing to start on corrupt storage: {0}")]
    CorruptStorage(#[from] DurableError),
    #[error("invalid log configuration: {0}")]
    Config(#[from] crate::log::node::ConfigError),
    #[error("the ensemble token cannot key the replica protocol: {0}")]
    Token(#[from] crate::log::frame::FrameError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    PeerTls(#[from] crate::log::tls::TlsError),
    #[error("the log driver failed: {0}")]
    Driver(String),
    #[error(
        "this member's replicated_log is log {ours:#x}, but {reporters} ({count} of the other members \
         of --masters, a quorum) are on log {ensemble:#x}: this volume belongs to another log and can \
         never vote here; stop this member, wipe {dir} and start it again to rejoin empty and catch up"
    )]
    ForeignLog {
        ours: u64,
        ensemble: u64,
        /// Comma-separated member addresses, sorted.
        reporters: String,
        count: usize,
        /// The `replicated_log` directory, as shown.
        dir: String,
    },
}

/// The node's timers in ticks, from the master's millisecond flags. The tick is
/// half a heartbeat interval, so every timer is a whole number of ticks.
pub fn node_config(config: &MasterConfig, seed: u64) -> (NodeConfig, Duration) {
    let members: Vec<MemberId> = config
        .masters
        .iter()
        .map(|m| MemberId::new(m.to_string()))
        .collect();
    let mut node = NodeConfig::new(
        MemberId::new(config.advertise_addr.to_string()),
        members,
        config.quorum,
        seed,
    );
    node.auto_initialize = config.log_auto_initialize;
    let tick_ms = (config.heartbeat_interval_ms / DEFAULT_HEARTBEAT_INTERVAL_TICKS).max(1);
    let election_min_ticks = (config.election_timeout_ms / tick_ms).max(2);
    node.heartbeat_interval_ticks = DEFAULT_HEARTBEAT_INTERVAL_TICKS;
    node.election_timeout_min_ticks = election_min_ticks;
    node.election_timeout_max_ticks = 2 * election_min_ticks;
    node.lease_ticks = (election_min_ticks * LEASE_PERCENT_OF_ELECTION_TIMEOUT / 100)
        .clamp(1, election_min_ticks - 1);
    (node, Duration::from_millis(tick_ms))
}

/// A running master, for the binary and for tests that embed one.
pub struct Master {
    pub local_addr: SocketAddr,
    pub view: SharedMasterView,
    pub log: LogHandle,
    pub metrics: Arc<Metrics>,
    pub counters: Arc<LinkCounters>,
}

/// Opens the log, binds the port, feeds learned entries to the registry and serves
/// until `shutdown` resolves.
pub async fn run(
    config: MasterConfig,
    token: Option<EnsembleToken>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_started: impl FnOnce(&Master),
) -> Result<(), ServerError> {
    let wal_options = WalOptions {
        segment_size_bytes: config.log_segment_size_bytes,
        ..WalOptions::default()
    };
    let opened = WalStorage::open(&config.replicated_log_dir, wal_options)?;
    if let Some(torn) = &opened.torn_tail {
        tracing::warn!(
            path = %torn.path.display(),
            offset = torn.offset,
            dropped_bytes = torn.dropped_bytes,
            reason = %torn.reason,
            "dropped a record cut short by a crash (it was never acknowledged)"
        );
    }
    let (node_config, tick_interval) = node_config(&config, driver::fresh_seed());
    let node = Node::new(node_config, opened.state)?;

    let key = match &token {
        Some(token) => FrameKey::new(token.expose().as_bytes())?,
        None => FrameKey::new(NO_TOKEN_KEY)?,
    };
    let whitelist: BTreeSet<String> = config.masters.iter().map(|m| m.to_string()).collect();
    let mut link_config = LinkConfig::new(config.advertise_addr.to_string(), key, whitelist);
    let counters = Arc::new(LinkCounters::default());
    let mut tls_reloader = None;
    if let Some(tls) = &config.peer_tls {
        let peer_tls = Arc::new(crate::log::tls::PeerTls::load(
            tls.files.clone(),
            &tls.server_names,
        )?);
        tracing::info!(
            cert = %tls.files.cert.display(),
            ca = %tls.files.ca.display(),
            cas = peer_tls.current().ca_count,
            "replica links run over TLS (required in both directions)"
        );
        tls_reloader = Some(peer_tls.spawn_reloader(
            Duration::from_millis(tls.reload_interval_ms),
            counters.clone(),
        ));
        link_config.tls = Some(peer_tls);
    }
    let link = Arc::new(link_config);
    if let Some(log_id) = node.log_id() {
        link.log_id
            .store(log_id.0, std::sync::atomic::Ordering::Relaxed);
    }
    let (inbound_tx, inbound) = mpsc::channel(driver::INBOUND_QUEUE_CAPACITY);
    let running = driver::spawn(
        node,
        opened.storage,
        link.clone(),
        counters.clone(),
        inbound,
        DriverOptions { tick_interval },
    );

    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen_addr,
            source,
        })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen_addr,
            source,
        })?;

    let view = SharedMasterView::new(MasterView::starting(&config));
    let metrics = Arc::new(Metrics::new());
    metrics.export_link_counters(counters.clone());
    let master = Master {
        local_addr,
        view: view.clone(),
        log: running.handle.clone(),
        metrics: metrics.clone(),
        counters: counters.clone(),
    };
    on_started(&master);

    let mut registrar_config = RegistrarConfig::new(config.advertise_addr.to_string());
    registrar_config.snapshot_after_operations = config.registry_snapshot_after_operations;
    registrar_config.snapshot_min_suffix_bytes = config.registry_snapshot_min_suffix_bytes;
    registrar_config.snapshot_chunk_bytes = config.registry_snapshot_chunk_bytes;
    let registrar = Registrar::new(
        registrar_config,
        Arc::new(DriverLogWriter::new(running.handle.clone())),
        metrics.clone(),
    );
    let publisher = tokio::spawn(publish_log_state(
        running.handle.subscribe(),
        view.clone(),
        registrar.clone(),
    ));
    let applier = tokio::spawn(apply_to_registry(running.deliveries, registrar.clone()));

    let mut router = http::router_with_registry(
        MasterState {
            view: view.clone(),
            metrics,
        },
        registrar,
    );
    if config.raw_log_api {
        router = router.merge(raw_log::router(running.handle.clone()));
    }
    let mut driver_task = running.task;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut foreign_log_check =
        tokio::time::interval(Duration::from_millis(FOREIGN_LOG_CHECK_INTERVAL_MS));
    let outcome = loop {
        tokio::select! {
            _ = foreign_log_check.tick() => {
                // Checked at startup and all along: a volume swapped under a
                // running member, or an ensemble re-created around it, shows the
                // same way.
                let found = foreign_log::verdict(
                    link.log_id.load(std::sync::atomic::Ordering::Relaxed),
                    &link.self_address,
                    &link.whitelist,
                    config.quorum,
                    &counters.foreign_logs.snapshot(),
                );
                if let Some(found) = found {
                    break Err(ServerError::ForeignLog {
                        ours: found.ours,
                        ensemble: found.ensemble,
                        count: found.reporters.len(),
                        reporters: found.reporters.join(", "),
                        dir: config.replicated_log_dir.display().to_string(),
                    });
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let router = router.clone();
                    let link = link.clone();
                    let counters = counters.clone();
                    let inbound = inbound_tx.clone();
                    tokio::spawn(async move {
                        match tcp::sniff(stream, &counters).await {
                            Ok(Sniffed::Http(stream)) => {
                                let _ = http::serve_connection(stream, router).await;
                            }
                            Ok(Sniffed::Replica(conn)) => {
                                if let Err(error) = tcp::serve_replica(conn, link, counters, inbound).await {
                                    tracing::debug!(%error, "replica connection closed");
                                }
                            }
                            Err(error) => tracing::debug!(%error, "connection dropped before it spoke"),
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                }
            },
            finished = &mut driver_task => {
                break match finished {
                    Ok(Ok(())) => Err(ServerError::Driver("stopped unexpectedly".into())),
                    Ok(Err(error)) => Err(ServerError::Driver(error.to_string())),
                    Err(error) => Err(ServerError::Driver(error.to_string())),
                };
            }
            () = &mut shutdown => break Ok(()),
        }
    };
    drop(listener);
    running.handle.stop().await;
    publisher.abort();
    applier.abort();
    if let Some(reloader) = tls_reloader {
        reloader.abort();
    }
    outcome
}

/// Hands learned registry entries to the registrar in position order. Raw entries
/// (`--raw_log_api`), Nops and truncations are the log's own business; the
/// registrar only learns they were delivered (to know how far behind it is), and
/// that positions were skipped (it must then restore from the next snapshot).
async fn apply_to_registry(mut deliveries: mpsc::Receiver<Delivery>, registrar: Registrar) {
    while let Some(delivery) = deliveries.recv().await {
        let (position, bytes) = match delivery {
            Delivery::Learned {
                position,
                action: Action::Append(bytes),
            } if bytes.first() != Some(&raw_log::RAW_ENTRY_TAG) => (position, bytes),
            Delivery::Learned { position, .. } => {
                registrar.note_delivered(position);
                continue;
            }
            Delivery::SkippedTo(position) => {
                registrar.skipped_to(position);
                continue;
            }
        };
        if let Err(corrupt) = registrar.apply_learned(position, &bytes) {
            // The registrar has stopped serving; every member reading this log
            // stops at the same entry, so nobody serves a diverged registry.
            tracing::error!(%corrupt, "the registry cannot read the log; registry reads and writes now fail");
            return;
        }
    }
}

async fn publish_log_state(
    mut states: tokio::sync::watch::Receiver<LogState>,
    view: SharedMasterView,
    registrar: Registrar,
) {
    loop {
        let state = states.borrow_and_update().clone();
        registrar.set_read_lease(state.read_lease);
        view.update(|v| {
            v.replica_status = match state.status {
                crate::log::ReplicaStatus::Empty => ReplicaStatus::Empty,
                crate::log::ReplicaStatus::Starting => ReplicaStatus::Starting,
                crate::log::ReplicaStatus::Recovering => ReplicaStatus::Recovering,
                crate::log::ReplicaStatus::Voting => ReplicaStatus::Voting,
            };
            v.log_id = state.log_id.map(|id| id.0);
            v.begin_position = state.begin;
            v.end_position = state.end;
            v.learned_position = state.learned_end;
            v.elected = state.elected;
            v.read_lease = state.read_lease;
            v.leader = state
                .leader
                .as_ref()
                .and_then(|leader| leader.0.parse::<SocketAddr>().ok());
        });
        if states.changed().await.is_err() {
            return;
        }
    }
}
