//! The operator's Prometheus metrics: reconciles, failures, and how long each kind
//! of step took to apply.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Every metric is `mesos_operator_*`.
const PREFIX: &str = "mesos_operator";

/// Step durations from 10 ms to about 80 s: applying a step is a handful of API calls.
const STEP_SECONDS_BUCKET_START: f64 = 0.01;
const STEP_SECONDS_BUCKET_FACTOR: f64 = 2.0;
const STEP_SECONDS_BUCKETS: u16 = 14;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// `RestartMember`, `CreateMember`, ... `Wait`, `Done`, `Failed`.
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The error variant.
    pub error: String,
}

/// Cheap to clone: every handle shares the same series.
#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Counter,
    pub failures: Family<FailureLabels, Counter>,
    pub steps: Family<StepLabels, Counter>,
    pub step_duration: Family<StepLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            steps: Family::default(),
            step_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(
                    STEP_SECONDS_BUCKET_START,
                    STEP_SECONDS_BUCKET_FACTOR,
                    STEP_SECONDS_BUCKETS,
                ))
            }),
        }
    }
}

impl Metrics {
    /// Registers the metrics in a new registry.
    pub fn register(&self) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "reconciles",
            "Reconciles of MesosMasterClusters",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that ended in an error, by error",
            self.failures.clone(),
        );
        registry.register(
            "steps",
            "Planner steps decided, by action",
            self.steps.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Time to apply one planner step, by action",
            self.step_duration.clone(),
        );
        registry
    }

    pub fn step_applied(&self, action: &str, took: Duration) {
        let labels = StepLabels {
            action: action.to_string(),
        };
        self.steps.get_or_create(&labels).inc();
        self.step_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn failed(&self, error: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                error: error.to_string(),
            })
            .inc();
    }
}

/// The registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    encode(&mut text, registry)?;
    Ok(text)
}
