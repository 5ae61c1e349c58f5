//! The master's flags, with Mesos' names and spelling, and their validation into a
//! typed [`MasterConfig`].
//!
//! Every flag is also read from `MESOS_<FLAG>` (uppercase), as Mesos does, so an
//! operator's existing environment files keep working. Validation is split in two:
//! [`validate`] is pure (addresses, quorum arithmetic, the whitelist) and unit
//! tested; [`load`] adds the two checks that need the file system (the work
//! directory and the ensemble token).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};

use crate::log::quorum::{max_members, quorums_intersect};

/// The only registry Mesos (and we) support: the Paxos replicated log.
pub const REGISTRY_REPLICATED_LOG: &str = "replicated_log";

/// The directory under `--work_dir` that holds the replicated log, as in Mesos; the
/// operational guide's "wipe" procedure removes exactly this directory.
pub const REPLICATED_LOG_DIR_NAME: &str = "replicated_log";

/// A follower stands for election only after this many heartbeat intervals without
/// one, so a single delayed or lost heartbeat does not depose a healthy leader.
pub const MIN_HEARTBEATS_PER_ELECTION_TIMEOUT: u64 = 2;

/// `--peer_tls`: whether replica links between members run over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerTlsMode {
    /// Every replica link, in and out, runs over mutually authenticated TLS;
    /// plaintext links are refused. Needs the three `--peer_tls_*_file` flags.
    Required,
    /// Plaintext replica links (the ensemble token still authenticates frames).
    Off,
}

/// How the master writes its `tracing` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// A Mesos master: one replica of the ensemble's Paxos replicated log, with leader
/// election over the log and the registry on top.
///
/// Every flag can also be given as `MESOS_<FLAG>` in the environment (for example
/// `MESOS_QUORUM=2`); a flag on the command line wins over the environment.
#[derive(Debug, Clone, Parser)]
///
/// A flag given twice takes its last value, so a wrapper (a container entrypoint,
/// the operator's local runtime) can append overrides to a base command line.
#[command(name = "mesos-master", version, args_override_self = true)]
pub struct Flags {
    /// IP address to listen on, for HTTP and the replica protocol (one port).
    /// Mesos binds all interfaces by default; we default to loopback so an
    /// unconfigured master is never reachable from the network, and require a
    /// routable address (this flag or --advertise_ip) that appears in --masters.
    #[arg(long = "ip", env = "MESOS_IP", default_value = "127.0.0.1")]
    pub ip: String,

    /// Port to listen on.
    #[arg(long = "port", env = "MESOS_PORT", default_value_t = 5050)]
    pub port: u16,

    /// IP address other members and clients use to reach this master, when it
    /// differs from --ip (NAT, a Kubernetes Service). Identifies this member in
    /// --masters.
    #[arg(long = "advertise_ip", env = "MESOS_ADVERTISE_IP")]
    pub advertise_ip: Option<String>,

    /// Port other members and clients use to reach this master, when it differs
    /// from --port.
    #[arg(long = "advertise_port", env = "MESOS_ADVERTISE_PORT")]
    pub advertise_port: Option<u16>,

    /// Size of a majority of the masters: the number of replicas that must accept a
    /// write. With N masters use (N / 2) + 1. Required.
    #[arg(long = "quorum", env = "MESOS_QUORUM")]
    pub quorum: Option<u32>,

    /// Directory for the master's persistent state; the log lives in
    /// <work_dir>/replicated_log. Created if missing. Required.
    #[arg(long = "work_dir", env = "MESOS_WORK_DIR")]
    pub work_dir: Option<PathBuf>,

    /// Where the registry is stored. Only `replicated_log` is supported.
    #[arg(long = "registry", env = "MESOS_REGISTRY", default_value = REGISTRY_REPLICATED_LOG)]
    pub registry: String,

    /// Whether to initialize the replicated log automatically when every member of
    /// --masters reports an empty log (true or false).
    #[arg(
        long = "log_auto_initialize",
        env = "MESOS_LOG_AUTO_INITIALIZE",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub log_auto_initialize: bool,

    /// The static whitelist of the ensemble (MESOS-1546): every member's advertised
    /// address as a comma-separated list of ip:port, e.g.
    /// 10.0.0.1:5050,10.0.0.2:5050,10.0.0.3:5050 (IPv6 as [::1]:5050). It must
    /// include this master and hold at most 2*quorum-1 members. Required.
    #[arg(long = "masters", env = "MESOS_MASTERS")]
    pub masters: Option<String>,

    /// File holding the ensemble token shared by all members; replica messages
    /// prove knowledge of it. Surrounding whitespace is ignored. Without it, the
    /// replica protocol cannot tell members from strangers that learn the whitelist.
    #[arg(long = "ensemble_token_file", env = "MESOS_ENSEMBLE_TOKEN_FILE")]
    pub ensemble_token_file: Option<PathBuf>,

    /// Milliseconds a follower waits without hearing the leader before standing
    /// for election (randomized up to twice this, so candidates rarely collide).
    /// The default keeps failover under a second on a LAN; raise it where the
    /// network or the disks stall for longer.
    #[arg(
        long = "election_timeout_ms",
        env = "MESOS_ELECTION_TIMEOUT_MS",
        default_value_t = 500
    )]
    pub election_timeout_ms: u64,

    /// Milliseconds between the leader's heartbeats through the log. At most half of
    /// --election_timeout_ms.
    #[arg(
        long = "heartbeat_interval_ms",
        env = "MESOS_HEARTBEAT_INTERVAL_MS",
        default_value_t = 100
    )]
    pub heartbeat_interval_ms: u64,

    /// Format of the master's logs: text for people, json for machines. The
    /// verbosity follows RUST_LOG (default: info).
    #[arg(long = "log_format", env = "MESOS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve POST /log/append and GET /log/read: raw appends to, and reads of, the
    /// replicated log, bypassing the registry. For tests and benchmarks only;
    /// entries written this way are ignored by the registry (true or false).
    #[arg(
        long = "raw_log_api",
        env = "MESOS_RAW_LOG_API",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub raw_log_api: bool,

    /// Snapshot the registry into the log after this many operations since the last
    /// snapshot (then truncate the log below it). Hidden: for tests that need
    /// truncation after a few thousand writes, and for tuning.
    #[arg(
        long = "registry_snapshot_after_operations",
        env = "MESOS_REGISTRY_SNAPSHOT_AFTER_OPERATIONS",
        default_value_t = crate::master::registrar::SNAPSHOT_AFTER_OPERATIONS,
        hide = true
    )]
    pub registry_snapshot_after_operations: u64,

    /// Snapshot once the log entries since the last snapshot reach this many bytes
    /// (or the snapshot's own size, whichever is larger). Hidden, as above.
    #[arg(
        long = "registry_snapshot_min_suffix_bytes",
        env = "MESOS_REGISTRY_SNAPSHOT_MIN_SUFFIX_BYTES",
        default_value_t = crate::master::registrar::SNAPSHOT_MIN_SUFFIX_BYTES,
        hide = true
    )]
    pub registry_snapshot_min_suffix_bytes: u64,

    /// Largest slice of a registry snapshot per log entry, 1 to 131072 (the default,
    /// which keeps any message of the log under its frame limit). Hidden: tests
    /// lower it to get many chunks from a small registry.
    #[arg(
        long = "registry_snapshot_chunk_bytes",
        env = "MESOS_REGISTRY_SNAPSHOT_CHUNK_BYTES",
        default_value_t = crate::master::registry::SNAPSHOT_CHUNK_BYTES,
        hide = true
    )]
    pub registry_snapshot_chunk_bytes: usize,

    /// Size at which the replicated log's write-ahead file starts a new segment;
    /// space is reclaimed a segment at a time once truncation leaves it dead.
    /// Hidden: tests lower it to watch storage stay bounded without writing 64 MiB.
    #[arg(
        long = "log_segment_size_bytes",
        env = "MESOS_LOG_SEGMENT_SIZE_BYTES",
        default_value_t = crate::log::wal::DEFAULT_SEGMENT_SIZE_BYTES,
        hide = true
    )]
    pub log_segment_size_bytes: u64,

    /// TLS between members: `required` (every replica link runs over mutually
    /// authenticated TLS, plaintext links are refused) or `off`. Defaults to
    /// `required` when the three --peer_tls_*_file flags are given, else `off`.
    /// The ensemble token still authenticates every frame inside TLS.
    #[arg(long = "peer_tls", env = "MESOS_PEER_TLS", value_enum)]
    pub peer_tls: Option<PeerTlsMode>,

    /// PEM certificate (chain) this master presents to the other members, as a
    /// server and as a client. It must verify against --peer_tls_ca_file and carry
    /// this member's name (see --peer_tls_server_names). Re-read when it changes.
    #[arg(long = "peer_tls_cert_file", env = "MESOS_PEER_TLS_CERT_FILE")]
    pub peer_tls_cert_file: Option<PathBuf>,

    /// PEM private key of --peer_tls_cert_file.
    #[arg(long = "peer_tls_key_file", env = "MESOS_PEER_TLS_KEY_FILE")]
    pub peer_tls_key_file: Option<PathBuf>,

    /// PEM bundle of the CA certificate(s) member certificates must chain to. Give
    /// the old and the new CA together during a CA rotation.
    #[arg(long = "peer_tls_ca_file", env = "MESOS_PEER_TLS_CA_FILE")]
    pub peer_tls_ca_file: Option<PathBuf>,

    /// The name each member's certificate must carry, as member=name pairs
    /// (10.0.0.1:5050=m-0-0.m-members.ns.svc,...). A member not listed must carry
    /// the IP address of its --masters entry as an IP SAN.
    #[arg(long = "peer_tls_server_names", env = "MESOS_PEER_TLS_SERVER_NAMES")]
    pub peer_tls_server_names: Option<String>,

    /// Milliseconds between checks of the --peer_tls_*_file files for new
    /// contents (certificate rotation). New contents apply to new connections.
    #[arg(
        long = "peer_tls_reload_interval_ms",
        env = "MESOS_PEER_TLS_RELOAD_INTERVAL_MS",
        default_value_t = crate::log::tls::DEFAULT_RELOAD_INTERVAL.as_millis() as u64
    )]
    pub peer_tls_reload_interval_ms: u64,
}

/// TLS between members, as the flags configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTlsConfig {
    pub files: crate::log::tls::TlsFiles,
    /// Member address -> the name its certificate must carry.
    pub server_names: BTreeMap<String, String>,
    pub reload_interval_ms: u64,
}

/// The ensemble token, kept out of `Debug` output so it never reaches the logs.
#[derive(Clone, PartialEq, Eq)]
pub struct EnsembleToken(String);

impl EnsembleToken {
    /// The token's text, for the transport to derive its proof from.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EnsembleToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnsembleToken(<{} bytes>)", self.0.len())
    }
}

/// The master's configuration, once every flag has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterConfig {
    /// Where the master listens (`--ip`:`--port`).
    pub listen_addr: SocketAddr,
    /// This member's identity in the ensemble and the address clients are
    /// redirected to (`--advertise_ip`/`--advertise_port`, else the listen address).
    pub advertise_addr: SocketAddr,
    /// Replicas that must accept a write (`--quorum`), at least 1.
    pub quorum: usize,
    /// The ensemble's whitelist (`--masters`), in the order given, without duplicates.
    pub masters: Vec<SocketAddr>,
    /// `--work_dir`.
    pub work_dir: PathBuf,
    /// `<work_dir>/replicated_log`, where the log's storage lives.
    pub replicated_log_dir: PathBuf,
    /// `--log_auto_initialize`.
    pub log_auto_initialize: bool,
    /// `--ensemble_token_file`, read by [`load`].
    pub ensemble_token_file: Option<PathBuf>,
    /// `--election_timeout_ms`.
    pub election_timeout_ms: u64,
    /// `--heartbeat_interval_ms`.
    pub heartbeat_interval_ms: u64,
    /// `--log_format`.
    pub log_format: LogFormat,
    /// `--raw_log_api`.
    pub raw_log_api: bool,
    /// `--registry_snapshot_after_operations`.
    pub registry_snapshot_after_operations: u64,
    /// `--registry_snapshot_min_suffix_bytes`.
    pub registry_snapshot_min_suffix_bytes: u64,
    /// `--registry_snapshot_chunk_bytes`, 1 to `SNAPSHOT_CHUNK_BYTES`.
    pub registry_snapshot_chunk_bytes: usize,
    /// `--log_segment_size_bytes`, at least [`MIN_LOG_SEGMENT_SIZE_BYTES`].
    pub log_segment_size_bytes: u64,
    /// `--peer_tls*`: `None` when replica links are plaintext.
    pub peer_tls: Option<PeerTlsConfig>,
}

/// Smallest `--log_segment_size_bytes`: below it a segment holds too few records
/// for the reclaim-per-segment scheme to make sense.
pub const MIN_LOG_SEGMENT_SIZE_BYTES: u64 = 64 << 10;

/// Why the master refuses to start. Each message is one line naming the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} is required (or set {env_var})")]
    Missing {
        flag: &'static str,
        env_var: &'static str,
    },

    #[error("--registry={0} is not supported: only --registry=replicated_log is accepted")]
    UnsupportedRegistry(String),

    #[error("--quorum must be at least 1, got {0}")]
    QuorumBelowOne(u32),

    #[error("{flag} value '{value}' is not a valid address: {reason}")]
    BadAddress {
        flag: &'static str,
        value: String,
        reason: String,
    },

    #[error("--masters lists {0} more than once")]
    DuplicateMaster(SocketAddr),

    #[error("--quorum={quorum} is larger than the {members} member(s) in --masters: no quorum could ever form")]
    QuorumLargerThanEnsemble { quorum: usize, members: usize },

    #[error(
        "quorums could fail to intersect: --masters lists {members} members but --quorum={quorum} \
         allows at most {max_members} (2*quorum-1)"
    )]
    QuorumsMayNotIntersect {
        quorum: usize,
        members: usize,
        max_members: usize,
    },

    #[error(
        "{addr} cannot identify this member to the others; \
         set --advertise_ip to this master's address in --masters"
    )]
    UnspecifiedAdvertiseAddress { addr: IpAddr },

    #[error("member {member} is not in --masters ({masters})")]
    NotAMember { member: SocketAddr, masters: String },

    #[error(
        "--heartbeat_interval_ms={heartbeat_interval_ms} must be at most half of \
         --election_timeout_ms={election_timeout_ms}, or one late heartbeat deposes the leader"
    )]
    HeartbeatTooSlow {
        heartbeat_interval_ms: u64,
        election_timeout_ms: u64,
    },

    #[error("--heartbeat_interval_ms must be at least 1")]
    HeartbeatZero,

    #[error("--registry_snapshot_chunk_bytes={0} must be 1 to {max} (the log's frames must carry 64 chunks)", max = crate::master::registry::SNAPSHOT_CHUNK_BYTES)]
    SnapshotChunkBytes(usize),

    #[error("--registry_snapshot_after_operations must be at least 1")]
    SnapshotAfterZero,

    #[error("--log_segment_size_bytes={0} is below the minimum of {MIN_LOG_SEGMENT_SIZE_BYTES}")]
    SegmentTooSmall(u64),

    #[error("--work_dir {path} is not writable: {source}")]
    WorkDirNotWritable { path: PathBuf, source: io::Error },

    #[error("--ensemble_token_file {path} cannot be read: {source}")]
    TokenUnreadable { path: PathBuf, source: io::Error },

    #[error("--ensemble_token_file {path} is empty")]
    TokenEmpty { path: PathBuf },

    #[error("TLS between members needs --peer_tls_cert_file, --peer_tls_key_file and --peer_tls_ca_file together; missing: {missing}")]
    PeerTlsIncomplete { missing: String },

    #[error("--peer_tls=off contradicts {given}: remove it, or use --peer_tls=required")]
    PeerTlsOffWithFiles { given: String },

    #[error("--peer_tls_server_names entry '{entry}' is not member=name ({reason})")]
    BadPeerTlsServerName { entry: String, reason: String },

    #[error("--peer_tls_reload_interval_ms must be at least 1")]
    PeerTlsReloadZero,

    #[error("{0}")]
    PeerTls(#[from] crate::log::tls::TlsError),
}

/// Checks the flags that need no I/O and builds the configuration.
///
/// The quorum rules are the operational guide's: with `--quorum=q`, at most
/// `2q-1` masters may run, or two disjoint groups of `q` could each accept writes
/// and the log diverges. The whitelist makes that count checkable at startup.
pub fn validate(flags: &Flags) -> Result<MasterConfig, ConfigError> {
    if flags.registry != REGISTRY_REPLICATED_LOG {
        return Err(ConfigError::UnsupportedRegistry(flags.registry.clone()));
    }

    let quorum = flags.quorum.ok_or(ConfigError::Missing {
        flag: "--quorum",
        env_var: "MESOS_QUORUM",
    })?;
    if quorum < 1 {
        return Err(ConfigError::QuorumBelowOne(quorum));
    }
    // A u32 always fits a usize on the platforms we build for (32 and 64 bit).
    let quorum = quorum as usize;

    let work_dir = flags.work_dir.clone().ok_or(ConfigError::Missing {
        flag: "--work_dir",
        env_var: "MESOS_WORK_DIR",
    })?;
    let masters_flag = flags.masters.as_deref().ok_or(ConfigError::Missing {
        flag: "--masters",
        env_var: "MESOS_MASTERS",
    })?;

    let ip = parse_ip("--ip", &flags.ip)?;
    let listen_addr = SocketAddr::new(ip, flags.port);
    // An empty MESOS_ADVERTISE_IP is how templates usually say "not set".
    let advertise_ip = match flags.advertise_ip.as_deref().map(str::trim) {
        Some(value) if !value.is_empty() => parse_ip("--advertise_ip", value)?,
        _ => ip,
    };
    let advertise_addr = SocketAddr::new(advertise_ip, flags.advertise_port.unwrap_or(flags.port));

    let masters = parse_masters(masters_flag)?;
    check_quorum_against_whitelist(quorum, masters.len())?;

    // 0.0.0.0 is a fine address to listen on but tells the other members nothing.
    if advertise_addr.ip().is_unspecified() {
        return Err(ConfigError::UnspecifiedAdvertiseAddress {
            addr: advertise_addr.ip(),
        });
    }
    if !masters.contains(&advertise_addr) {
        return Err(ConfigError::NotAMember {
            member: advertise_addr,
            masters: join_addrs(&masters),
        });
    }

    if flags.heartbeat_interval_ms == 0 {
        return Err(ConfigError::HeartbeatZero);
    }
    if flags
        .heartbeat_interval_ms
        .saturating_mul(MIN_HEARTBEATS_PER_ELECTION_TIMEOUT)
        > flags.election_timeout_ms
    {
        return Err(ConfigError::HeartbeatTooSlow {
            heartbeat_interval_ms: flags.heartbeat_interval_ms,
            election_timeout_ms: flags.election_timeout_ms,
        });
    }

    let chunk_bytes = flags.registry_snapshot_chunk_bytes;
    if chunk_bytes == 0 || chunk_bytes > crate::master::registry::SNAPSHOT_CHUNK_BYTES {
        return Err(ConfigError::SnapshotChunkBytes(chunk_bytes));
    }
    if flags.registry_snapshot_after_operations == 0 {
        return Err(ConfigError::SnapshotAfterZero);
    }
    if flags.log_segment_size_bytes < MIN_LOG_SEGMENT_SIZE_BYTES {
        return Err(ConfigError::SegmentTooSmall(flags.log_segment_size_bytes));
    }

    let peer_tls = validate_peer_tls(flags)?;

    Ok(MasterConfig {
        listen_addr,
        advertise_addr,
        quorum,
        masters,
        replicated_log_dir: work_dir.join(REPLICATED_LOG_DIR_NAME),
        work_dir,
        log_auto_initialize: flags.log_auto_initialize,
        ensemble_token_file: flags.ensemble_token_file.clone(),
        election_timeout_ms: flags.election_timeout_ms,
        heartbeat_interval_ms: flags.heartbeat_interval_ms,
        log_format: flags.log_format,
        raw_log_api: flags.raw_log_api,
        registry_snapshot_after_operations: flags.registry_snapshot_after_operations,
        registry_snapshot_min_suffix_bytes: flags.registry_snapshot_min_suffix_bytes,
        registry_snapshot_chunk_bytes: chunk_bytes,
        log_segment_size_bytes: flags.log_segment_size_bytes,
        peer_tls,
    })
}

/// The `--peer_tls*` flags, checked without reading the files. An empty value
/// (a template's "not set") counts as not given.
fn validate_peer_tls(flags: &Flags) -> Result<Option<PeerTlsConfig>, ConfigError> {
    let given = |path: &Option<PathBuf>| path.clone().filter(|p| !p.as_os_str().is_empty());
    let files = [
        ("--peer_tls_cert_file", given(&flags.peer_tls_cert_file)),
        ("--peer_tls_key_file", given(&flags.peer_tls_key_file)),
        ("--peer_tls_ca_file", given(&flags.peer_tls_ca_file)),
    ];
    let named = |present: bool| {
        files
            .iter()
            .filter(|(_, path)| path.is_some() == present)
            .map(|(flag, _)| *flag)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let any_given = files.iter().any(|(_, path)| path.is_some());
    match flags.peer_tls {
        Some(PeerTlsMode::Off) if any_given => {
            return Err(ConfigError::PeerTlsOffWithFiles { given: named(true) })
        }
        Some(PeerTlsMode::Off) => return Ok(None),
        None if !any_given => return Ok(None),
        _ => {}
    }
    let [(_, Some(cert)), (_, Some(key)), (_, Some(ca))] = files.clone() else {
        return Err(ConfigError::PeerTlsIncomplete {
            missing: named(false),
        });
    };
    if flags.peer_tls_reload_interval_ms == 0 {
        return Err(ConfigError::PeerTlsReloadZero);
    }
    let mut server_names = BTreeMap::new();
    for entry in flags
        .peer_tls_server_names
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let bad = |reason: &str| ConfigError::BadPeerTlsServerName {
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        let (member, name) = entry.split_once('=').ok_or_else(|| bad("no '='"))?;
        let member: SocketAddr = member
            .trim()
            .parse()
            .map_err(|_| bad("the member is not ip:port"))?;
        let name = name.trim();
        if rustls::pki_types::ServerName::try_from(name).is_err() {
            return Err(bad("the name is not a DNS name or IP address"));
        }
        server_names.insert(member.to_string(), name.to_owned());
    }
    Ok(Some(PeerTlsConfig {
        files: crate::log::tls::TlsFiles { cert, key, ca },
        server_names,
        reload_interval_ms: flags.peer_tls_reload_interval_ms,
    }))
}

/// Everything [`validate`] checks, then the file system: creates `--work_dir` if
/// missing and proves it writable, and reads the ensemble token.
pub fn load(flags: &Flags) -> Result<(MasterConfig, Option<EnsembleToken>), ConfigError> {
    let config = validate(flags)?;
    prepare_work_dir(&config.work_dir)?;
    let token = match &config.ensemble_token_file {
        Some(path) => Some(read_ensemble_token(path)?),
        None => None,
    };
    // Loaded here only to refuse a bad set at startup in one line; the server
    // loads them again (and keeps watching them).
    if let Some(tls) = &config.peer_tls {
        crate::log::tls::PeerTls::load(tls.files.clone(), &tls.server_names)?;
    }
    Ok((config, token))
}

/// Creates the work directory if needed and writes (then removes) a probe file:
/// permissions, a read-only mount or a full disk show up now, not at the first
/// log write after the member has already joined a quorum.
pub fn prepare_work_dir(work_dir: &Path) -> Result<(), ConfigError> {
    let not_writable = |source| ConfigError::WorkDirNotWritable {
        path: work_dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(work_dir).map_err(not_writable)?;
    let probe = work_dir.join(".mesos-master-write-probe");
    fs::write(&probe, b"probe").map_err(not_writable)?;
    fs::remove_file(&probe).map_err(not_writable)?;
    Ok(())
}

/// Reads the ensemble token; surrounding whitespace is dropped because secrets
/// mounted from files usually end with a newline.
pub fn read_ensemble_token(path: &Path) -> Result<EnsembleToken, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::TokenUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::TokenEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(EnsembleToken(token.to_owned()))
}

fn check_quorum_against_whitelist(quorum: usize, members: usize) -> Result<(), ConfigError> {
    if quorum > members {
        return Err(ConfigError::QuorumLargerThanEnsemble { quorum, members });
    }
    if !quorums_intersect(quorum, members) {
        return Err(ConfigError::QuorumsMayNotIntersect {
            quorum,
            members,
            max_members: max_members(quorum),
        });
    }
    Ok(())
}

fn parse_ip(flag: &'static str, value: &str) -> Result<IpAddr, ConfigError> {
    let trimmed = value.trim();
    // Accept the bracketed IPv6 form too, since that is how it appears in --masters.
    let bare = trimmed
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(trimmed);
    bare.parse()
        .map_err(|err: std::net::AddrParseError| ConfigError::BadAddress {
            flag,
            value: value.to_owned(),
            reason: format!("{err} (expected an IPv4 or IPv6 address, not a hostname)"),
        })
}

fn parse_masters(value: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut masters = Vec::new();
    let mut seen = HashSet::new();
    for entry in value.split(',') {
        let entry = entry.trim();
        let addr: SocketAddr =
            entry
                .parse()
                .map_err(|err: std::net::AddrParseError| ConfigError::BadAddress {
                    flag: "--masters",
                    value: entry.to_owned(),
                    reason: format!("{err} (expected ip:port, e.g. 10.0.0.1:5050 or [::1]:5050)"),
                })?;
        if !seen.insert(addr) {
            return Err(ConfigError::DuplicateMaster(addr));
        }
        masters.push(addr);
    }
    Ok(masters)
}

fn join_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut argv = vec!["mesos-master"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).expect("test flags parse")
    }

    fn three_members(extra: &[&str]) -> Flags {
        let mut args = vec![
            "--ip=127.0.0.1",
            "--port=5050",
            "--quorum=2",
            "--work_dir=/tmp/unused",
            "--masters=127.0.0.1:5050,127.0.0.2:5050,127.0.0.3:5050",
        ];
        args.extend_from_slice(extra);
        flags(&args)
    }

    #[test]
    fn three_members_with_quorum_two_is_accepted() {
        let config = validate(&three_members(&[])).expect("valid");
        assert_eq!(config.quorum, 2);
        assert_eq!(config.masters.len(), 3);
        assert_eq!(config.advertise_addr, "127.0.0.1:5050".parse().unwrap());
        assert_eq!(
            config.replicated_log_dir,
            PathBuf::from("/tmp/unused/replicated_log")
        );
        assert!(config.log_auto_initialize);
    }

    #[test]
    fn single_master_with_quorum_one_is_accepted() {
        let config = validate(&flags(&[
            "--quorum=1",
            "--work_dir=/w",
            "--masters=127.0.0.1:5050",
        ]))
        .expect("valid");
        assert_eq!(
            config.masters,
            vec!["127.0.0.1:5050".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn whitelist_longer_than_two_quorums_minus_one_is_refused() {
        let err = validate(&flags(&[
            "--quorum=2",
            "--work_dir=/w",
            "--masters=127.0.0.1:5050,127.0.0.2:5050,127.0.0.3:5050,127.0.0.4:5050",
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::QuorumsMayNotIntersect {
                quorum: 2,
                members: 4,
                max_members: 3
            }
        ));
        assert!(err
            .to_string()
            .starts_with("quorums could fail to intersect"));
    }

    #[test]
    fn every_whitelist_size_up_to_nine_is_checked_against_the_quorum() {
        let all: Vec<String> = (1..=9).map(|i| format!("127.0.0.{i}:5050")).collect();
        for members in 1..=9usize {
            for quorum in 1..=9usize {
                let list = all[..members].join(",");
                let f = flags(&[
                    &format!("--quorum={quorum}"),
                    "--work_dir=/w",
                    &format!("--masters={list}"),
                ]);
                let ok = validate(&f).is_ok();
                // Intersecting and formable: q <= n <= 2q - 1.
                assert_eq!(
                    ok,
                    quorum <= members && members < 2 * quorum,
                    "n={members} q={quorum}"
                );
            }
        }
    }

    #[test]
    fn quorum_larger_than_whitelist_is_refused() {
        let err = validate(&three_members(&["--quorum=4"])).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::QuorumLargerThanEnsemble {
                quorum: 4,
                members: 3
            }
        ));
    }

    #[test]
    fn quorum_zero_is_refused() {
        let err = validate(&three_members(&["--quorum=0"])).unwrap_err();
        assert!(matches!(err, ConfigError::QuorumBelowOne(0)));
    }

    #[test]
    fn missing_quorum_names_the_flag_and_its_env_var() {
        let err = validate(&flags(&["--work_dir=/w", "--masters=127.0.0.1:5050"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--quorum is required (or set MESOS_QUORUM)"
        );
    }

    #[test]
    fn own_address_missing_from_whitelist_is_refused() {
        let err = validate(&three_members(&["--ip=127.0.0.9"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "member 127.0.0.9:5050 is not in --masters (127.0.0.1:5050,127.0.0.2:5050,127.0.0.3:5050)"
        );
    }

    #[test]
    fn advertised_address_is_the_member_identity() {
        let config = validate(&three_members(&[
            "--ip=0.0.0.0",
            "--port=6000",
            "--advertise_ip=127.0.0.2",
            "--advertise_port=5050",
        ]))
        .expect("valid");
        assert_eq!(config.listen_addr, "0.0.0.0:6000".parse().unwrap());
        assert_eq!(config.advertise_addr, "127.0.0.2:5050".parse().unwrap());

        let err = validate(&three_members(&["--advertise_port=5051"])).unwrap_err();
        assert!(matches!(err, ConfigError::NotAMember { .. }));
    }

    #[test]
    fn empty_advertise_ip_means_unset() {
        let config = validate(&three_members(&["--advertise_ip="])).expect("valid");
        assert_eq!(config.advertise_addr, "127.0.0.1:5050".parse().unwrap());
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        let config = validate(&three_members(&["--quorum=3", "--quorum=2"])).expect("valid");
        assert_eq!(config.quorum, 2);
    }

    #[test]
    fn unspecified_address_without_advertise_ip_is_refused() {
        let err = validate(&three_members(&["--ip=0.0.0.0"])).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::UnspecifiedAdvertiseAddress { .. }
        ));
    }

    #[test]
    fn registry_other_than_replicated_log_is_refused() {
        let err = validate(&three_members(&["--registry=in_memory"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--registry=in_memory is not supported: only --registry=replicated_log is accepted"
        );
    }

    #[test]
    fn duplicate_whitelist_entries_are_refused_even_when_spelled_differently() {
        let err = validate(&flags(&[
            "--quorum=2",
            "--work_dir=/w",
            "--masters=127.0.0.1:5050, 127.0.0.1:05050,127.0.0.2:5050",
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--masters lists 127.0.0.1:5050 more than once"
        );
    }

    #[test]
    fn unparsable_addresses_are_refused() {
        for bad in [
            "localhost:5050",
            "127.0.0.1",
            "127.0.0.1:notaport",
            "",
            "::1:5050",
        ] {
            let err = validate(&flags(&[
                "--quorum=1",
                "--work_dir=/w",
                &format!("--masters={bad}"),
            ]))
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::BadAddress {
                        flag: "--masters",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        let err = validate(&three_members(&["--ip=master-0"])).unwrap_err();
        assert!(matches!(err, ConfigError::BadAddress { flag: "--ip", .. }));
    }

    #[test]
    fn ipv6_members_are_accepted() {
        let config = validate(&flags(&[
            "--ip=::1",
            "--quorum=2",
            "--work_dir=/w",
            "--masters=[::1]:5050,[::2]:5050,[::3]:5050",
        ]))
        .expect("valid");
        assert_eq!(config.advertise_addr, "[::1]:5050".parse().unwrap());
        let bracketed = validate(&flags(&[
            "--ip=[::1]",
            "--quorum=1",
            "--work_dir=/w",
            "--masters=[::1]:5050",
        ]));
        assert!(bracketed.is_ok());
    }

    #[test]
    fn log_auto_initialize_accepts_true_and_false() {
        assert!(
            !validate(&three_members(&["--log_auto_initialize=false"]))
                .unwrap()
                .log_auto_initialize
        );
        assert!(
            validate(&three_members(&["--log_auto_initialize=true"]))
                .unwrap()
                .log_auto_initialize
        );
        assert!(
            validate(&three_members(&["--log_auto_initialize"]))
                .unwrap()
                .log_auto_initialize
        );
    }

    #[test]
    fn heartbeat_must_fit_twice_in_the_election_timeout() {
        let err = validate(&three_members(&[
            "--election_timeout_ms=1000",
            "--heartbeat_interval_ms=600",
        ]))
        .unwrap_err();
        assert!(matches!(err, ConfigError::HeartbeatTooSlow { .. }));
        assert!(validate(&three_members(&[
            "--election_timeout_ms=1000",
            "--heartbeat_interval_ms=500"
        ]))
        .is_ok());
        assert!(matches!(
            validate(&three_members(&["--heartbeat_interval_ms=0"])),
            Err(ConfigError::HeartbeatZero)
        ));
    }

    #[test]
    fn snapshot_tuning_flags_are_bounded() {
        let config = validate(&three_members(&[
            "--registry_snapshot_after_operations=500",
            "--registry_snapshot_min_suffix_bytes=65536",
            "--registry_snapshot_chunk_bytes=4096",
        ]))
        .unwrap();
        assert_eq!(config.registry_snapshot_after_operations, 500);
        assert_eq!(config.registry_snapshot_min_suffix_bytes, 65536);
        assert_eq!(config.registry_snapshot_chunk_bytes, 4096);
        let defaults = validate(&three_members(&[])).unwrap();
        assert_eq!(
            defaults.registry_snapshot_chunk_bytes,
            crate::master::registry::SNAPSHOT_CHUNK_BYTES
        );
        for bad in [
            "--registry_snapshot_chunk_bytes=0",
            "--registry_snapshot_chunk_bytes=131073",
        ] {
            assert!(matches!(
                validate(&three_members(&[bad])),
                Err(ConfigError::SnapshotChunkBytes(_))
            ));
        }
        assert!(matches!(
            validate(&three_members(&["--registry_snapshot_after_operations=0"])),
            Err(ConfigError::SnapshotAfterZero)
        ));
        assert!(matches!(
            validate(&three_members(&["--log_segment_size_bytes=1000"])),
            Err(ConfigError::SegmentTooSmall(1000))
        ));
    }

    #[test]
    fn every_error_message_is_one_line() {
        let cases = [
            three_members(&["--quorum=0"]),
            three_members(&["--quorum=4"]),
            three_members(&["--ip=127.0.0.9"]),
            three_members(&["--registry=zk"]),
            three_members(&["--ip=0.0.0.0"]),
            three_members(&["--heartbeat_interval_ms=5000"]),
        ];
        for f in cases {
            let message = validate(&f).unwrap_err().to_string();
            assert!(!message.contains('\n'), "{message}");
        }
    }

    proptest::proptest! {
        /// Whatever arrives in the address flags, validation answers with a value
        /// or an error, never a panic.
        #[test]
        fn validation_never_panics_on_any_address_text(
            masters in "\\PC{0,60}",
            ip in "\\PC{0,20}",
            advertise_ip in proptest::option::of("\\PC{0,20}"),
            quorum in proptest::option::of(0u32..12),
        ) {
            let mut f = three_members(&[]);
            f.masters = Some(masters);
            f.ip = ip;
            f.advertise_ip = advertise_ip;
            f.quorum = quorum;
            let _ = validate(&f);
        }

        /// Accepted configurations always satisfy the intersection rule.
        #[test]
        fn accepted_configurations_have_intersecting_quorums(members in 1usize..=9, quorum in 0u32..=10) {
            let list: Vec<String> = (1..=members).map(|i| format!("127.0.0.{i}:5050")).collect();
            let mut f = three_members(&[]);
            f.masters = Some(list.join(","));
            f.quorum = Some(quorum);
            if let Ok(config) = validate(&f) {
                proptest::prop_assert!(2 * config.quorum > config.masters.len());
                proptest::prop_assert!(config.quorum <= config.masters.len());
                proptest::prop_assert!(config.masters.contains(&config.advertise_addr));
            }
        }
    }

    #[test]
    fn token_is_trimmed_and_empty_or_missing_token_files_are_refused() {
        let dir =
            std::env::temp_dir().join(format!("mesos-master-flags-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let good = dir.join("token");
        fs::write(&good, "s3cret\n").unwrap();
        assert_eq!(read_ensemble_token(&good).unwrap().expose(), "s3cret");
        assert!(!format!("{:?}", read_ensemble_token(&good).unwrap()).contains("s3cret"));

        let empty = dir.join("empty");
        fs::write(&empty, " \n").unwrap();
        assert!(matches!(
            read_ensemble_token(&empty),
            Err(ConfigError::TokenEmpty { .. })
        ));
        assert!(matches!(
            read_ensemble_token(&dir.join("missing")),
            Err(ConfigError::TokenUnreadable { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn work_dir_is_created_when_missing() {
        let dir = std::env::temp_dir().join(format!(
            "mesos-master-workdir-test-{}/nested",
            std::process::id()
        ));
        prepare_work_dir(&dir).expect("creatable");
        assert!(dir.is_dir());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "probe file removed");
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_file_in_place_of_the_work_dir_is_not_writable() {
        let file =
            std::env::temp_dir().join(format!("mesos-master-workdir-file-{}", std::process::id()));
        fs::write(&file, "x").unwrap();
        assert!(matches!(
            prepare_work_dir(&file),
            Err(ConfigError::WorkDirNotWritable { .. })
        ));
        fs::remove_file(&file).unwrap();
    }

    #[test]
    fn peer_tls_needs_all_three_files_and_says_which_are_missing() {
        let err = validate(&three_members(&["--peer_tls_cert_file=/c"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TLS between members needs --peer_tls_cert_file, --peer_tls_key_file and \
             --peer_tls_ca_file together; missing: --peer_tls_key_file, --peer_tls_ca_file"
        );
        let err = validate(&three_members(&["--peer_tls=required"])).unwrap_err();
        assert!(
            matches!(err, ConfigError::PeerTlsIncomplete { .. }),
            "{err}"
        );
        let err =
            validate(&three_members(&["--peer_tls=off", "--peer_tls_ca_file=/a"])).unwrap_err();
        assert!(err
            .to_string()
            .contains("--peer_tls=off contradicts --peer_tls_ca_file"));
        // Off is the default.
        assert_eq!(validate(&three_members(&[])).expect("valid").peer_tls, None);
    }

    #[test]
    fn peer_tls_files_and_server_names_reach_the_config() {
        let config = validate(&three_members(&[
            "--peer_tls_cert_file=/tls/tls.crt",
            "--peer_tls_key_file=/tls/tls.key",
            "--peer_tls_ca_file=/tls/ca.crt",
            "--peer_tls_server_names=127.0.0.2:5050=m-1-0.m-members.ns.svc",
        ]))
        .expect("valid");
        let tls = config.peer_tls.expect("TLS on");
        assert_eq!(tls.files.ca, PathBuf::from("/tls/ca.crt"));
        assert_eq!(
            tls.server_names.get("127.0.0.2:5050").map(String::as_str),
            Some("m-1-0.m-members.ns.svc")
        );
        let err = validate(&three_members(&[
            "--peer_tls_cert_file=/c",
            "--peer_tls_key_file=/k",
            "--peer_tls_ca_file=/a",
            "--peer_tls_server_names=m-0=name",
        ]))
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::BadPeerTlsServerName { .. }),
            "{err}"
        );
    }
}
