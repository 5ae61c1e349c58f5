//! The master's metrics, served two ways from the same figures: Mesos' flat JSON
//! (`/metrics/snapshot`, which existing Mesos dashboards read) and Prometheus text
//! (`/metrics`).
//!
//! Figures that describe the master's state (elected, recovered, ...) are read from
//! the [`MasterView`] at scrape time, so they can never disagree with `/log/status`.
//! Counters are owned by the modules that count: they ask [`Metrics::counter`] for
//! one and increment it. The replica transport keeps its own atomics
//! ([`LinkCounters`], since `src/log` knows nothing of Prometheus); they are read at
//! scrape time under `log/transport/...` once [`Metrics::export_link_counters`]
//! is called.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::view::MasterView;
use crate::log::tcp::LinkCounters;

/// Prefix of every Prometheus metric name, so the master's series are easy to find.
pub const PROMETHEUS_PREFIX: &str = "mesos";

/// The figures the master reports itself; a module's counter must not reuse a key.
pub const BUILT_IN_KEYS: [&str; 8] = [
    "master/elected",
    "master/uptime_secs",
    "registrar/log/recovered",
    "registrar/log/ensemble_size",
    "registrar/log/quorum",
    "registrar/state_fetch_ms",
    "registrar/queued_operations",
    "registrar/registry_size_bytes",
];

/// The registrar's store timer: Mesos reports it, with percentiles, only once it
/// has a sample, so it is not among the [`BUILT_IN_KEYS`] always present.
pub const STATE_STORE_KEY: &str = "registrar/state_store_ms";

/// Store latencies kept for the percentiles: the last thousand stores, enough for a
/// stable p99 and small enough to sort at every scrape (Mesos keeps a time window).
pub const STORE_LATENCY_SAMPLES: usize = 1_000;

/// Members currently saying, in authenticated frames, that they are on another log
/// than this master's (a gauge: see [`crate::log::tcp::ForeignLogReports`]).
pub const FOREIGN_LOG_REPORTERS_KEY: &str = "log/transport/foreign_log_reporters";

/// The transport's counters as `(Mesos-style key, help, value)`, in one place so
/// both formats export the same set.
fn link_figures(c: &LinkCounters) -> [(&'static str, &'static str, u64); 25] {
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    [
        ("log/transport/frames_sent", "Replica-protocol frames written to peers", get(&c.frames_sent)),
        ("log/transport/frames_received", "Replica-protocol frames that passed every check", get(&c.frames_received)),
        ("log/transport/refused_not_whitelisted", "Frames refused: the sender is not in --masters", get(&c.refused_not_whitelisted)),
        ("log/transport/refused_bad_mac", "Frames refused: the MAC does not verify (wrong ensemble token, replayed from another connection, corrupted)", get(&c.refused_bad_mac)),
        ("log/transport/refused_wrong_log_id", "Frames refused: the sender is on another log id", get(&c.refused_wrong_log_id)),
        ("log/transport/malformed_frames", "Connections refused for bytes that are not the protocol (preamble, magic, version, flags, sequence)", get(&c.malformed_frames)),
        ("log/transport/oversized_frames", "Connections refused for a frame header announcing more than the maximum payload or sender length", get(&c.oversized_frames)),
        ("log/transport/truncated_frames", "Connections closed in the middle of a frame", get(&c.truncated_frames)),
        ("log/transport/dropped_queue_full", "Outbound messages dropped: the peer's queue was full", get(&c.dropped_queue_full)),
        ("log/transport/dropped_too_large", "Outbound messages dropped: larger than the maximum payload", get(&c.dropped_too_large)),
        ("log/transport/dropped_in_flight", "Outbound messages lost with a connection that failed while writing them", get(&c.dropped_in_flight)),
        ("log/transport/dropped_inbound_full", "Inbound frames dropped: the log driver's queue was full", get(&c.dropped_inbound_full)),
        ("log/transport/connects", "Outbound replica connections established", get(&c.connects)),
        ("log/transport/connect_failures", "Outbound replica connections that failed", get(&c.connect_failures)),
        ("log/transport/sniffed_http", "Accepted connections handed to HTTP", get(&c.sniffed_http)),
        ("log/transport/sniffed_replica", "Accepted connections that spoke the replica protocol", get(&c.sniffed_replica)),
        ("log/transport/refused_plaintext", "Plaintext replica connections refused: this master requires TLS between members", get(&c.refused_plaintext)),
        ("log/transport/refused_tls_unexpected", "TLS replica connections refused: this master runs without TLS between members", get(&c.refused_tls_unexpected)),
        ("log/transport/refused_tls_handshake", "Inbound TLS handshakes that failed (certificate of no CA in the bundle, expired, missing, not TLS)", get(&c.refused_tls_handshake)),
        ("log/transport/v1_accepted", "Accepted replica connections that settled on protocol v1: a connector of a build older than the previous one (a mixed ensemble)", get(&c.v1_accepted)),
        ("log/transport/v2_accepted", "Accepted replica connections that settled on protocol v2: a connector of the previous build (a mixed ensemble)", get(&c.v2_accepted)),
        ("log/transport/v1_fallbacks", "Outbound replica links that fell back to protocol v1: the peer is a master of a build older than the previous one", get(&c.v1_fallbacks)),
        ("log/transport/v2_fallbacks", "Outbound replica links that fell back to protocol v2: the peer is a master of the previous build", get(&c.v2_fallbacks)),
        ("log/transport/tls_reloads", "Peer TLS certificate files loaded again after they changed", get(&c.tls_reloads)),
        ("log/transport/tls_reload_failures", "Changed peer TLS certificate files that could not be read or loaded (the previous ones stay in use)", get(&c.tls_reload_failures)),
    ]
}

/// Reads the transport's atomics at every Prometheus scrape.
#[derive(Debug)]
struct LinkCollector(Arc<LinkCounters>);

impl Collector for LinkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for (key, help, value) in link_figures(&self.0) {
            let counter = ConstCounter::new(value);
            let name = prometheus_name(key);
            let metric = encoder.encode_descriptor(&name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let reporters = ConstGauge::new(saturating_i64(self.0.foreign_logs.snapshot().len()));
        let name = prometheus_name(FOREIGN_LOG_REPORTERS_KEY);
        let metric = encoder.encode_descriptor(
            &name,
            "Members currently reporting, in authenticated frames, another log id than this master's",
            None,
            reporters.metric_type(),
        )?;
        reporters.encode(metric)
    }
}

/// The registrar's figures; the registrar sets them, both formats read them.
pub struct RegistrarMetrics {
    state_fetch_ms: Gauge<f64, AtomicU64>,
    queued_operations: Gauge,
    registry_size_bytes: Gauge,
    state_store_ms: Histogram,
    recent_store_ms: Mutex<VecDeque<f64>>,
}

impl RegistrarMetrics {
    fn new() -> Self {
        Self {
            state_fetch_ms: Gauge::default(),
            queued_operations: Gauge::default(),
            registry_size_bytes: Gauge::default(),
            // 0.1 ms to ~3 s.
            state_store_ms: Histogram::new(exponential_buckets(0.1, 2.0, 16)),
            recent_store_ms: Mutex::new(VecDeque::with_capacity(STORE_LATENCY_SAMPLES)),
        }
    }

    /// Time to restore the registry from its latest snapshot entry.
    pub fn set_state_fetch(&self, elapsed: Duration) {
        self.state_fetch_ms.set(elapsed.as_secs_f64() * 1e3);
    }

    /// Time from appending a batch to having applied it.
    pub fn observe_state_store(&self, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1e3;
        self.state_store_ms.observe(ms);
        let mut recent = lock(&self.recent_store_ms);
        if recent.len() == STORE_LATENCY_SAMPLES {
            recent.pop_front();
        }
        recent.push_back(ms);
    }

    /// Operations queued or in flight.
    pub fn set_queued_operations(&self, operations: usize) {
        self.queued_operations.set(saturating_i64(operations));
    }

    /// Bytes of log the registry occupies (latest snapshot plus entries since).
    pub fn set_registry_size_bytes(&self, bytes: u64) {
        self.registry_size_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn snapshot_into(&self, snapshot: &mut BTreeMap<String, f64>) {
        snapshot.insert(
            "registrar/state_fetch_ms".to_owned(),
            self.state_fetch_ms.get(),
        );
        snapshot.insert(
            "registrar/queued_operations".to_owned(),
            self.queued_operations.get() as f64,
        );
        snapshot.insert(
            "registrar/registry_size_bytes".to_owned(),
            self.registry_size_bytes.get() as f64,
        );
        let recent = lock(&self.recent_store_ms);
        let Some(&last) = recent.back() else {
            return;
        };
        let mut sorted: Vec<f64> = recent.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let key = |suffix: &str| format!("{STATE_STORE_KEY}/{suffix}");
        snapshot.insert(STATE_STORE_KEY.to_owned(), last);
        snapshot.insert(key("count"), sorted.len() as f64);
        snapshot.insert(key("min"), sorted[0]);
        snapshot.insert(key("max"), sorted[sorted.len() - 1]);
        for (suffix, quantile) in [
            ("p50", 0.5),
            ("p90", 0.9),
            ("p95", 0.95),
            ("p99", 0.99),
            ("p999", 0.999),
            ("p9999", 0.9999),
        ] {
            snapshot.insert(key(suffix), percentile(&sorted, quantile));
        }
    }
}

/// Nearest-rank percentile of a sorted, non-empty sample.
fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The master's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    counters: Mutex<BTreeMap<String, Counter>>,
    elected: Gauge,
    uptime_secs: Gauge<f64, AtomicU64>,
    recovered: Gauge,
    ensemble_size: Gauge,
    quorum: Gauge,
    registrar: RegistrarMetrics,
    link: OnceLock<Arc<LinkCounters>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A scrape never fails because some other thread panicked while holding a lock:
/// the registry and counters stay valid (every update is a single atomic store).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix(PROMETHEUS_PREFIX)),
            counters: Mutex::new(BTreeMap::new()),
            elected: Gauge::default(),
            uptime_secs: Gauge::default(),
            recovered: Gauge::default(),
            ensemble_size: Gauge::default(),
            quorum: Gauge::default(),
            registrar: RegistrarMetrics::new(),
            link: OnceLock::new(),
        };
        {
            let mut registry = lock(&metrics.registry);
            registry.register(
                "master_elected",
                "Whether this master is the elected leader (1) or not (0)",
                metrics.elected.clone(),
            );
            registry.register(
                "master_uptime_seconds",
                "Seconds since this master started serving",
                metrics.uptime_secs.clone(),
            );
            registry.register(
                "registrar_log_recovered",
                "Whether this master's log replica is VOTING (1) or not yet (0)",
                metrics.recovered.clone(),
            );
            registry.register(
                "registrar_log_ensemble_size",
                "Members in the --masters whitelist",
                metrics.ensemble_size.clone(),
            );
            registry.register(
                "registrar_log_quorum",
                "The --quorum this master runs with",
                metrics.quorum.clone(),
            );
            registry.register(
                "registrar_state_fetch_ms",
                "Milliseconds the registry took to restore from its latest snapshot",
                metrics.registrar.state_fetch_ms.clone(),
            );
            registry.register(
                "registrar_queued_operations",
                "Registry operations queued or in flight",
                metrics.registrar.queued_operations.clone(),
            );
            registry.register(
                "registrar_registry_size_bytes",
                "Bytes of log the registry occupies: latest snapshot plus entries since",
                metrics.registrar.registry_size_bytes.clone(),
            );
            registry.register(
                "registrar_state_store_ms",
                "Milliseconds from appending a registry batch to having applied it",
                metrics.registrar.state_store_ms.clone(),
            );
        }
        metrics
    }

    /// Exports the transport's counters in both formats from now on. A second call
    /// is ignored: a master has one transport.
    pub fn export_link_counters(&self, counters: Arc<LinkCounters>) {
        if self.link.set(counters.clone()).is_ok() {
            lock(&self.registry).register_collector(Box::new(LinkCollector(counters)));
        }
    }

    /// The registrar's figures.
    pub fn registrar(&self) -> &RegistrarMetrics {
        &self.registrar
    }

    /// A counter under the Mesos-style `key` (e.g. `log/refused_frames`), also
    /// exported to Prometheus as `mesos_<key with '/' as '_'>_total`. Asking twice
    /// for the same key returns the same counter, so modules need not coordinate.
    pub fn counter(&self, key: &str, help: &str) -> Counter {
        debug_assert!(
            !BUILT_IN_KEYS.contains(&key) && !key.starts_with(STATE_STORE_KEY),
            "{key} is one of the master's own figures, not a counter"
        );
        let mut counters = lock(&self.counters);
        if let Some(counter) = counters.get(key) {
            return counter.clone();
        }
        let counter = Counter::default();
        lock(&self.registry).register(prometheus_name(key), help, counter.clone());
        counters.insert(key.to_owned(), counter.clone());
        counter
    }

    /// The Mesos `/metrics/snapshot` object: flat keys, numeric values.
    pub fn snapshot(&self, view: &MasterView, uptime: Duration) -> BTreeMap<String, f64> {
        let mut snapshot = BTreeMap::new();
        snapshot.insert(
            "master/elected".to_owned(),
            f64::from(u8::from(view.elected)),
        );
        snapshot.insert("master/uptime_secs".to_owned(), uptime.as_secs_f64());
        snapshot.insert(
            "registrar/log/recovered".to_owned(),
            f64::from(u8::from(view.recovered())),
        );
        snapshot.insert(
            "registrar/log/ensemble_size".to_owned(),
            view.masters.len() as f64,
        );
        snapshot.insert("registrar/log/quorum".to_owned(), view.quorum as f64);
        self.registrar.snapshot_into(&mut snapshot);
        if let Some(link) = self.link.get() {
            for (key, _, value) in link_figures(link) {
                snapshot.insert(key.to_owned(), value as f64);
            }
            snapshot.insert(
                FOREIGN_LOG_REPORTERS_KEY.to_owned(),
                link.foreign_logs.snapshot().len() as f64,
            );
        }
        for (key, counter) in lock(&self.counters).iter() {
            // Counters beyond 2^53 lose precision in JSON either way.
            snapshot.insert(key.clone(), counter.get() as f64);
        }
        snapshot
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn encode_prometheus(
        &self,
        view: &MasterView,
        uptime: Duration,
    ) -> Result<String, fmt::Error> {
        self.elected.set(i64::from(view.elected));
        self.uptime_secs.set(uptime.as_secs_f64());
        self.recovered.set(i64::from(view.recovered()));
        self.ensemble_size.set(saturating_i64(view.masters.len()));
        self.quorum.set(saturating_i64(view.quorum));
        let mut text = String::new();
        encode(&mut text, &lock(&self.registry))?;
        Ok(text)
    }
}

fn saturating_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Prometheus names allow `[a-zA-Z0-9_:]`; everything else (the `/` of Mesos keys)
/// becomes `_`.
fn prometheus_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::api::ReplicaStatus;

    fn view() -> MasterView {
        MasterView {
            replica_status: ReplicaStatus::Voting,
            log_id: Some(7),
            begin_position: 0,
            end_position: 10,
            learned_position: 10,
            quorum: 2,
            masters: vec![
                "127.0.0.1:5050".parse().unwrap(),
                "127.0.0.2:5050".parse().unwrap(),
            ],
            advertise_addr: "127.0.0.1:5050".parse().unwrap(),
            leader: Some("127.0.0.1:5050".parse().unwrap()),
            elected: true,
            read_lease: false,
            peer_tls: false,
        }
    }

    #[test]
    fn snapshot_has_the_mesos_keys() {
        let metrics = Metrics::new();
        let snapshot = metrics.snapshot(&view(), Duration::from_secs(3));
        assert_eq!(snapshot["master/elected"], 1.0);
        assert_eq!(snapshot["master/uptime_secs"], 3.0);
        assert_eq!(snapshot["registrar/log/recovered"], 1.0);
        assert_eq!(snapshot["registrar/log/ensemble_size"], 2.0);
    }

    #[test]
    fn snapshot_reports_exactly_the_built_in_keys_without_counters() {
        let snapshot = Metrics::new().snapshot(&view(), Duration::ZERO);
        let keys: Vec<&str> = snapshot.keys().map(String::as_str).collect();
        let mut expected = BUILT_IN_KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn counters_appear_in_both_formats_and_are_shared_by_key() {
        let metrics = Metrics::new();
        metrics
            .counter("log/refused_frames", "Frames refused")
            .inc();
        metrics
            .counter("log/refused_frames", "Frames refused")
            .inc();
        let snapshot = metrics.snapshot(&view(), Duration::ZERO);
        assert_eq!(snapshot["log/refused_frames"], 2.0);
        let text = metrics.encode_prometheus(&view(), Duration::ZERO).unwrap();
        assert!(text.contains("mesos_log_refused_frames_total 2"), "{text}");
        assert!(text.contains("mesos_master_elected 1"), "{text}");
        assert!(
            text.contains("mesos_registrar_log_ensemble_size 2"),
            "{text}"
        );
    }

    #[test]
    fn link_counters_appear_in_both_formats_under_log_transport() {
        let metrics = Metrics::new();
        let link = Arc::new(LinkCounters::default());
        metrics.export_link_counters(link.clone());
        metrics.export_link_counters(link.clone());
        link.refused_not_whitelisted.fetch_add(3, Ordering::Relaxed);
        link.oversized_frames.fetch_add(1, Ordering::Relaxed);
        link.v1_fallbacks.fetch_add(2, Ordering::Relaxed);
        link.v2_accepted.fetch_add(4, Ordering::Relaxed);
        link.foreign_logs.report("127.0.0.2:5050", 9);
        let snapshot = metrics.snapshot(&view(), Duration::ZERO);
        assert_eq!(snapshot["log/transport/refused_not_whitelisted"], 3.0);
        // A mixed ensemble (rolling upgrade) shows in the older-protocol counters.
        assert_eq!(snapshot["log/transport/v1_fallbacks"], 2.0);
        assert_eq!(snapshot["log/transport/v1_accepted"], 0.0);
        assert_eq!(snapshot["log/transport/v2_accepted"], 4.0);
        assert_eq!(snapshot["log/transport/v2_fallbacks"], 0.0);
        assert_eq!(snapshot["log/transport/oversized_frames"], 1.0);
        assert_eq!(snapshot["log/transport/truncated_frames"], 0.0);
        assert_eq!(snapshot[FOREIGN_LOG_REPORTERS_KEY], 1.0);
        let text = metrics.encode_prometheus(&view(), Duration::ZERO).unwrap();
        assert!(
            text.contains("mesos_log_transport_refused_not_whitelisted_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("mesos_log_transport_oversized_frames_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mesos_log_transport_v1_fallbacks_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("mesos_log_transport_foreign_log_reporters 1\n"),
            "{text}"
        );
        // Registered once despite two calls: one TYPE line per metric.
        assert_eq!(
            text.matches("# TYPE mesos_log_transport_frames_sent counter")
                .count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn registrar_figures_appear_in_both_formats_with_store_percentiles() {
        let metrics = Metrics::new();
        let registrar = metrics.registrar();
        registrar.set_queued_operations(3);
        registrar.set_registry_size_bytes(4096);
        registrar.set_state_fetch(Duration::from_millis(12));
        let snapshot = metrics.snapshot(&view(), Duration::ZERO);
        assert!(!snapshot.contains_key(STATE_STORE_KEY));
        for ms in 1..=100 {
            registrar.observe_state_store(Duration::from_millis(ms));
        }
        let snapshot = metrics.snapshot(&view(), Duration::ZERO);
        assert_eq!(snapshot["registrar/queued_operations"], 3.0);
        assert_eq!(snapshot["registrar/registry_size_bytes"], 4096.0);
        assert_eq!(snapshot["registrar/state_fetch_ms"], 12.0);
        assert_eq!(snapshot["registrar/state_store_ms"], 100.0);
        assert_eq!(snapshot["registrar/state_store_ms/p50"], 50.0);
        assert_eq!(snapshot["registrar/state_store_ms/p99"], 99.0);
        assert_eq!(snapshot["registrar/state_store_ms/count"], 100.0);
        let text = metrics.encode_prometheus(&view(), Duration::ZERO).unwrap();
        assert!(
            text.contains("mesos_registrar_queued_operations 3"),
            "{text}"
        );
        assert!(
            text.contains("mesos_registrar_registry_size_bytes 4096"),
            "{text}"
        );
        assert!(
            text.contains("mesos_registrar_state_store_ms_count 100"),
            "{text}"
        );
        assert!(text.contains("mesos_registrar_state_fetch_ms 12"), "{text}");
    }
}
