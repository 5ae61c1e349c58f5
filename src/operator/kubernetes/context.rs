//! What every reconcile is handed: the client, the event recorder, the metrics and
//! how masters are called. Nothing in it is state a reconcile relies on:
//! a fresh `Context` (an operator restart) reconciles exactly as the old one would.

use std::sync::Arc;

use kube::runtime::events::{Event, Recorder, Reporter};
use kube::Resource;

use crate::operator::api::MesosMasterCluster;
use crate::operator::kubernetes::metrics::Metrics;
use crate::operator::master_client::MasterClient;

/// The controller's name on Events and in `managedFields`.
pub const CONTROLLER_NAME: &str = "mesos-operator";

pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Status reads and the registry transfer calls of a `Preserve` exit.
    pub masters: Arc<dyn MasterClient>,
}

impl Context {
    /// `instance` names this operator process on its Events (its pod name).
    pub fn new(
        client: kube::Client,
        masters: Arc<dyn MasterClient>,
        metrics: Metrics,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            masters,
        }
    }
}

/// Publishes one Event; best-effort: a failure to publish is logged, never stops
/// the step.
pub async fn publish(cluster: &MesosMasterCluster, ctx: &Context, event: Event) {
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, reason = %event.reason, "could not publish an event");
    }
}
