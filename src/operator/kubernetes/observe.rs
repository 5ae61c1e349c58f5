//! Observation: what the cluster's pods, volumes, StatefulSets and Services say,
//! and what each master answers on `GET /log/status`, turned into the planner's
//! [`Observed`].
//!
//! Masters are read through a [`MasterClient`]: the HTTP client in production, a
//! fake in the tests (which answers as a master started with the pod's current
//! environment would).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, ListParams};

use crate::master::api::{self, LogStatus};
use crate::operator::api::{Ordinal, PlannerMemory, ANNOTATION_VOLUME_LOST, LABEL_MEMBER};
use crate::operator::kubernetes::resources::{config_from_annotations, Names};
use crate::operator::master_client::{MasterClient, MemberTarget};
use crate::operator::planner::{
    MemberConfig, Observed, ObservedMember, PodView, ReplicaStatus, ReplicaView, VolumeState,
};

/// Everything one reconcile saw, with the planner's view of it.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub observed: Observed,
    pub pods: BTreeMap<Ordinal, Pod>,
    pub claims: BTreeMap<Ordinal, PersistentVolumeClaim>,
    pub statefulsets: BTreeMap<Ordinal, StatefulSet>,
    /// Member Services that exist, with their cluster IPs once allocated.
    pub member_services: BTreeSet<Ordinal>,
    pub service_ips: BTreeMap<Ordinal, IpAddr>,
    pub statuses: BTreeMap<Ordinal, LogStatus>,
    /// Why a member's status is unknown, for the status' reasons.
    pub status_errors: BTreeMap<Ordinal, String>,
}

// Here rather than derived in planner.rs, which belongs to the planner branch: an
// empty observation, filled in by `observe`.
#[allow(clippy::derivable_impls)]
impl Default for Observed {
    fn default() -> Self {
        Observed {
            cluster_name: String::new(),
            members: Vec::new(),
            leader: None,
            memory: PlannerMemory::default(),
        }
    }
}

fn member_label(labels: Option<&BTreeMap<String, String>>) -> Option<Ordinal> {
    labels?.get(LABEL_MEMBER)?.parse().ok()
}

fn replica_status(status: api::ReplicaStatus) -> ReplicaStatus {
    match status {
        api::ReplicaStatus::Empty => ReplicaStatus::Empty,
        api::ReplicaStatus::Starting => ReplicaStatus::Starting,
        api::ReplicaStatus::Recovering => ReplicaStatus::Recovering,
        api::ReplicaStatus::Voting => ReplicaStatus::Voting,
    }
}

/// The configuration in a pod's spec; a pod without our annotations gets one no
/// procedure produces, so the planner refuses to act around it.
pub fn pod_config(pod: &Pod) -> MemberConfig {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(config_from_annotations)
        .unwrap_or(MemberConfig {
            quorum: 0,
            whitelist: Vec::new(),
        })
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

/// Where member `ordinal`'s master answers: its pod's IP and the cluster's port; none
/// for a pod without an IP or being deleted.
pub fn member_target(
    names: &Names,
    observation: &Observation,
    ordinal: Ordinal,
    port: u16,
) -> Option<MemberTarget> {
    let pod = observation.pods.get(&ordinal)?;
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    Some(MemberTarget {
        name: names.pod(ordinal),
        address: SocketAddr::new(ip, port),
    })
}

/// Lists the cluster's objects and reads every running master's status.
pub async fn observe(
    client: &kube::Client,
    names: &Names,
    port: u16,
    memory: PlannerMemory,
    masters: &dyn MasterClient,
) -> Result<Observation, kube::Error> {
    let selector = ListParams::default().labels(&names.selector());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &names.namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &names.namespace);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &names.namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &names.namespace);

    let mut observation = Observation::default();
    for pod in pods.list(&selector).await?.items {
        if let Some(ordinal) = member_label(pod.metadata.labels.as_ref()) {
            if pod.metadata.name.as_deref() == Some(names.pod(ordinal).as_str()) {
                observation.pods.insert(ordinal, pod);
            }
        }
    }
    for claim in claims.list(&selector).await?.items {
        if let Some(ordinal) = member_label(claim.metadata.labels.as_ref()) {
            if claim.metadata.name.as_deref() == Some(names.volume_claim(ordinal).as_str()) {
                observation.claims.insert(ordinal, claim);
            }
        }
    }
    for statefulset in statefulsets.list(&selector).await?.items {
        if let Some(ordinal) = member_label(statefulset.metadata.labels.as_ref()) {
            if statefulset.metadata.name.as_deref() == Some(names.statefulset(ordinal).as_str()) {
                observation.statefulsets.insert(ordinal, statefulset);
            }
        }
    }
    for service in services.list(&selector).await?.items {
        let Some(ordinal) = member_label(service.metadata.labels.as_ref()) else {
            continue;
        };
        if service.metadata.name.as_deref() != Some(names.member_service(ordinal).as_str()) {
            continue;
        }
        observation.member_services.insert(ordinal);
        if let Some(ip) = service
            .spec
            .as_ref()
            .and_then(|spec| spec.cluster_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        {
            observation.service_ips.insert(ordinal, ip);
        }
    }

    // Statuses are read concurrently: one slow master costs one timeout, not one each.
    let reads = observation.pods.keys().filter_map(|ordinal| {
        let target = member_target(names, &observation, *ordinal, port)?;
        let ordinal = *ordinal;
        Some(async move { (ordinal, masters.log_status(target).await) })
    });
    for (ordinal, result) in futures::future::join_all(reads).await {
        match result {
            Ok(status) => {
                observation.statuses.insert(ordinal, status);
            }
            Err(error) => {
                observation.status_errors.insert(ordinal, error.to_string());
            }
        }
    }

    let ordinals: BTreeSet<Ordinal> = observation
        .pods
        .keys()
        .chain(observation.claims.keys())
        .copied()
        .collect();
    let members = ordinals
        .into_iter()
        .map(|ordinal| ObservedMember {
            ordinal,
            pod: observation.pods.get(&ordinal).map(|pod| PodView {
                config: pod_config(pod),
                terminating: pod.metadata.deletion_timestamp.is_some(),
                ready: pod_ready(pod),
                replica: observation
                    .statuses
                    .get(&ordinal)
                    .map(|status| ReplicaView {
                        status: replica_status(status.status),
                        log_end_position: status.end,
                    }),
            }),
            volume: match observation.claims.get(&ordinal) {
                None => VolumeState::Absent,
                Some(claim) => volume_state(claim),
            },
        })
        .collect();
    let elected: Vec<Ordinal> = observation
        .statuses
        .iter()
        .filter(|(_, status)| status.elected)
        .map(|(ordinal, _)| *ordinal)
        .collect();
    observation.observed = Observed {
        cluster_name: names.cluster.clone(),
        members,
        // Two members both claiming to lead is no leader the planner can rely on.
        leader: match elected.as_slice() {
            [leader] => Some(*leader),
            _ => None,
        },
        memory,
    };
    Ok(observation)
}

/// A claim being deleted, reported `Lost` by Kubernetes, or marked lost by an
/// administrator holds no data the member may come back with.
fn volume_state(claim: &PersistentVolumeClaim) -> VolumeState {
    let marked = claim
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|annotations| annotations.contains_key(ANNOTATION_VOLUME_LOST));
    let phase_lost = claim
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        == Some("Lost");
    if marked || phase_lost || claim.metadata.deletion_timestamp.is_some() {
        VolumeState::Lost
    } else {
        VolumeState::Present
    }
}
