//! The Kubernetes objects of one `MesosMasterCluster`, built from the spec and the
//! planner's `MemberConfig`s. Pure: no client; `reconcile` applies what these return.
//!
//! # How a per-member quorum reaches each pod: one StatefulSet per member
//!
//! During a transition members run with different `--quorum`s and whitelists
//! (3 -> 5 restarts `m-0`, `m-1`, `m-2` with `--quorum=3` one at a time while the
//! others still run `--quorum=2`). One StatefulSet template cannot say that, and
//! every indirection a shared template could use (a ConfigMap or pod annotation read
//! at start) races the pod's start: a recreated pod may read the old value, and the
//! image is distroless (no shell for an entrypoint script). So each member is a
//! StatefulSet of one replica, `<cluster>-<ordinal>` (pod `<cluster>-<ordinal>-0`,
//! volume `work-<cluster>-<ordinal>-0`), whose template carries exactly that
//! member's `MESOS_QUORUM` and `MESOS_MASTERS`, and the same configuration as
//! annotations the operator reads back. "Restart member i with quorum q and
//! whitelist W" is then exact: apply StatefulSet i with (q, W), delete pod i; the
//! StatefulSet controller recreates it from that template (OnDelete: a template
//! change alone restarts nothing). Removing member i deletes its StatefulSet (so
//! nothing recreates the pod), its pod and its volume.
//!
//! # Member addresses: one ClusterIP Service per member
//!
//! `--masters` and `--advertise_ip` take `ip:port`, not names (MESOS-1546's
//! whitelist is of addresses), and pod IPs change on every restart. Each member
//! therefore has a ClusterIP Service `<cluster>-member-<ordinal>` selecting only
//! its pod (`publishNotReadyAddresses`, so members reach each other before they
//! are ready); its cluster IP is stable for the Service's life and is the member's
//! advertise address and its entry in every whitelist. The headless Service still
//! gives the StatefulSets stable DNS names (`<cluster>-<i>-0.<cluster>-members`)
//! for people and tools. Where `externalAccess.advertise[i]` is set, that address
//! is the member's identity instead, served by an optional external Service.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret, SecretVolumeSource, SecurityContext,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::Resource;

use crate::operator::api::{
    ExternalServiceType, MesosMasterCluster, Ordinal, ANNOTATION_IMPORT_SKIPPED, ANNOTATION_QUORUM,
    ANNOTATION_WHITELIST, LABEL_INSTANCE, LABEL_LEADER, LABEL_MANAGED_BY, LABEL_MEMBER, LABEL_NAME,
};
use crate::operator::planner::MemberConfig;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "mesos-operator";
/// `app.kubernetes.io/name` of the masters' pods and volumes.
pub const MASTER_APP_NAME: &str = "mesos-master";
/// The StatefulSet pod label the member Service selects on.
const LABEL_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// `app.kubernetes.io/name` of the operator's own pods (allowed by the NetworkPolicy).
const OPERATOR_APP_NAME: &str = "mesos-operator";

/// Where the member's volume is mounted; `--work_dir`.
pub const WORK_DIR: &str = "/var/lib/mesos";
/// The volume claim template's name (claims are `work-<cluster>-<i>-0`).
const WORK_VOLUME: &str = "work";
/// Where the ensemble token Secret is mounted.
const TOKEN_DIR: &str = "/etc/mesos/ensemble";
/// Key of the token in its Secret.
pub const TOKEN_KEY: &str = "token";
/// Bytes of OS randomness in a token (256 bits), hex-encoded in the Secret.
pub const TOKEN_BYTES: usize = 32;
/// The distroless "nonroot" user and group.
const MASTER_UID: i64 = 65532;
/// The image's default command is the operator; masters run this.
pub const MASTER_COMMAND: &str = "/usr/local/bin/mesos-master";

/// Why an object cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    #[error("the cluster object has no {0} (it must come from the API server)")]
    MissingMetadata(&'static str),
    #[error("member {member} has no address yet: {why}")]
    NoAddress { member: String, why: String },
}

/// Names of the cluster's objects.
#[derive(Clone, Debug)]
pub struct Names {
    pub cluster: String,
    pub namespace: String,
}

impl Names {
    pub fn of(cluster: &MesosMasterCluster) -> Result<Self, ResourceError> {
        Ok(Self {
            cluster: cluster
                .metadata
                .name
                .clone()
                .ok_or(ResourceError::MissingMetadata("name"))?,
            namespace: cluster
                .metadata
                .namespace
                .clone()
                .ok_or(ResourceError::MissingMetadata("namespace"))?,
        })
    }
    /// The member's StatefulSet, `<cluster>-<i>` (the planner's member name).
    pub fn statefulset(&self, ordinal: Ordinal) -> String {
        format!("{}-{ordinal}", self.cluster)
    }
    pub fn pod(&self, ordinal: Ordinal) -> String {
        format!("{}-{ordinal}-0", self.cluster)
    }
    pub fn volume_claim(&self, ordinal: Ordinal) -> String {
        format!("{WORK_VOLUME}-{}-{ordinal}-0", self.cluster)
    }
    pub fn member_service(&self, ordinal: Ordinal) -> String {
        format!("{}-member-{ordinal}", self.cluster)
    }
    pub fn external_service(&self, ordinal: Ordinal) -> String {
        format!("{}-external-{ordinal}", self.cluster)
    }
    pub fn headless_service(&self) -> String {
        format!("{}-members", self.cluster)
    }
    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }
    pub fn leader_service(&self) -> String {
        format!("{}-leader", self.cluster)
    }
    pub fn token_secret(&self) -> String {
        format!("{}-ensemble-token", self.cluster)
    }
    pub fn pdb(&self) -> String {
        self.cluster.clone()
    }
    pub fn network_policy(&self) -> String {
        self.cluster.clone()
    }
    /// Where a `Preserve` exit keeps the registry export between the seal and the
    /// import.
    pub fn registry_export(&self) -> String {
        format!("{}-registry-export", self.cluster)
    }
    /// Label selector of all the cluster's masters (pods, claims, member Services).
    pub fn selector(&self) -> String {
        format!(
            "{LABEL_NAME}={MASTER_APP_NAME},{LABEL_INSTANCE}={}",
            self.cluster
        )
    }
}

/// Labels of everything that belongs to the cluster's masters.
pub fn selector_labels(names: &Names) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), MASTER_APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), names.cluster.clone()),
    ])
}

fn labels(names: &Names, member: Option<Ordinal>) -> BTreeMap<String, String> {
    let mut labels = selector_labels(names);
    labels.insert(LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string());
    if let Some(ordinal) = member {
        labels.insert(LABEL_MEMBER.to_string(), ordinal.to_string());
    }
    labels
}

fn owner(cluster: &MesosMasterCluster) -> Result<OwnerReference, ResourceError> {
    cluster
        .controller_owner_ref(&())
        .ok_or(ResourceError::MissingMetadata("uid"))
}

fn meta(
    cluster: &MesosMasterCluster,
    names: &Names,
    name: String,
    member: Option<Ordinal>,
) -> Result<ObjectMeta, ResourceError> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels(names, member)),
        owner_references: Some(vec![owner(cluster)?]),
        ..ObjectMeta::default()
    })
}

fn master_port(cluster: &MesosMasterCluster) -> Vec<ServicePort> {
    vec![ServicePort {
        name: Some("master".into()),
        port: i32::from(cluster.spec.port),
        target_port: Some(IntOrString::Int(i32::from(cluster.spec.port))),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }]
}

/// The address that identifies member `ordinal` in every whitelist: its
/// `externalAccess.advertise` entry if the spec gives one, else its member
/// Service's cluster IP and the cluster's port.
pub fn member_address(
    cluster: &MesosMasterCluster,
    names: &Names,
    ordinal: Ordinal,
    service_ips: &BTreeMap<Ordinal, IpAddr>,
) -> Result<SocketAddr, ResourceError> {
    let member = names.statefulset(ordinal);
    if let Some(entry) = cluster
        .spec
        .external_access
        .as_ref()
        .and_then(|external| external.advertise.get(ordinal as usize))
    {
        let ip: IpAddr = entry
            .address
            .parse()
            .map_err(|_| ResourceError::NoAddress {
                member: member.clone(),
                why: format!(
                    "externalAccess.advertise[{ordinal}].address {:?} is not an IP address (--advertise_ip takes one)",
                    entry.address
                ),
            })?;
        return Ok(SocketAddr::new(ip, entry.port.unwrap_or(cluster.spec.port)));
    }
    let ip = service_ips
        .get(&ordinal)
        .ok_or_else(|| ResourceError::NoAddress {
            member,
            why: format!(
                "Service {} has no cluster IP yet",
                names.member_service(ordinal)
            ),
        })?;
    Ok(SocketAddr::new(*ip, cluster.spec.port))
}

/// `--masters` for `config`: the whitelisted members' addresses, by ordinal.
pub fn masters_flag(
    cluster: &MesosMasterCluster,
    names: &Names,
    config: &MemberConfig,
    service_ips: &BTreeMap<Ordinal, IpAddr>,
) -> Result<String, ResourceError> {
    let addresses = config
        .whitelist
        .iter()
        .map(|ordinal| member_address(cluster, names, *ordinal, service_ips).map(|a| a.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(addresses.join(","))
}

/// `"0,1,2"`.
pub fn whitelist_annotation(config: &MemberConfig) -> String {
    config
        .whitelist
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The configuration a pod (or template) carries in its annotations, if any.
pub fn config_from_annotations(annotations: &BTreeMap<String, String>) -> Option<MemberConfig> {
    let quorum = annotations.get(ANNOTATION_QUORUM)?.parse().ok()?;
    let whitelist = annotations.get(ANNOTATION_WHITELIST)?;
    let whitelist = if whitelist.is_empty() {
        Vec::new()
    } else {
        whitelist
            .split(',')
            .map(|ordinal| ordinal.trim().parse().ok())
            .collect::<Option<Vec<Ordinal>>>()?
    };
    Some(MemberConfig { quorum, whitelist })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// Member `ordinal`'s StatefulSet running `config`.
pub fn member_statefulset(
    cluster: &MesosMasterCluster,
    names: &Names,
    ordinal: Ordinal,
    config: &MemberConfig,
    service_ips: &BTreeMap<Ordinal, IpAddr>,
) -> Result<StatefulSet, ResourceError> {
    let spec = &cluster.spec;
    let advertise = member_address(cluster, names, ordinal, service_ips)?;
    let masters = masters_flag(cluster, names, config, service_ips)?;
    let pod_labels = labels(names, Some(ordinal));
    let annotations = BTreeMap::from([
        (ANNOTATION_QUORUM.to_string(), config.quorum.to_string()),
        (
            ANNOTATION_WHITELIST.to_string(),
            whitelist_annotation(config),
        ),
    ]);
    let env = vec![
        env("MESOS_QUORUM", config.quorum.to_string()),
        env("MESOS_MASTERS", masters),
        env("MESOS_WORK_DIR", WORK_DIR),
        env("MESOS_PORT", spec.port.to_string()),
        EnvVar {
            name: "MESOS_IP".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        env("MESOS_ADVERTISE_IP", advertise.ip().to_string()),
        env("MESOS_ADVERTISE_PORT", advertise.port().to_string()),
        env(
            "MESOS_ENSEMBLE_TOKEN_FILE",
            format!("{TOKEN_DIR}/{TOKEN_KEY}"),
        ),
        env("MESOS_LOG_FORMAT", "json"),
    ];
    let probe = |path: &str, period_seconds: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("master".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(3),
        ..Probe::default()
    };
    let container = Container {
        name: "mesos-master".into(),
        image: Some(spec.image.clone()),
        command: Some(vec![MASTER_COMMAND.into()]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("master".into()),
            container_port: i32::from(spec.port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/health", 5)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            failure_threshold: Some(6),
            ..probe("/health", 10)
        }),
        resources: spec.resources.clone(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: WORK_VOLUME.into(),
                mount_path: WORK_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "ensemble-token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(MASTER_UID),
            run_as_group: Some(MASTER_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(WORK_VOLUME.into()),
            labels: Some(pod_labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    spec.storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    let mut statefulset = StatefulSet {
        metadata: meta(cluster, names, names.statefulset(ordinal), Some(ordinal))?,
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names.headless_service()),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (LABEL_NAME.to_string(), MASTER_APP_NAME.to_string()),
                    (LABEL_INSTANCE.to_string(), names.cluster.clone()),
                    (LABEL_MEMBER.to_string(), ordinal.to_string()),
                ])),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // Parallel: a member's pod is recreated without waiting on ordering.
            pod_management_policy: Some("Parallel".into()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // Masters need no Kubernetes API access.
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(MASTER_UID),
                        run_as_group: Some(MASTER_UID),
                        fs_group: Some(MASTER_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "ensemble-token".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some(names.token_secret()),
                            default_mode: Some(0o440),
                            ..SecretVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    };
    if let Some(tls) = &spec.tls {
        mount_peer_tls(
            &mut statefulset,
            &tls.secret_name,
            cluster,
            names,
            config,
            service_ips,
        )?;
    }
    Ok(statefulset)
}

/// Where a member pod mounts `spec.tls.secretName`.
pub const PEER_TLS_DIR: &str = "/etc/mesos/peer-tls";
const PEER_TLS_VOLUME: &str = "peer-tls";

/// The name member `ordinal`'s certificate must carry: its pod's DNS name under
/// the headless Service. Whitelists hold Service IPs that no certificate can know
/// in advance, so each member is told this name for every whitelisted address
/// (`--peer_tls_server_names`); a cert-manager Certificate covers them all with
/// `*.<cluster>-members.<namespace>.svc`.
pub fn member_tls_name(names: &Names, ordinal: Ordinal) -> String {
    format!(
        "{}.{}.{}.svc",
        names.pod(ordinal),
        names.headless_service(),
        names.namespace
    )
}

/// Mounts the TLS Secret into a member's pod and sets the `--peer_tls*` flags
/// (cert-manager's file names; the master re-reads them when the kubelet swaps
/// the Secret's files, so a renewal restarts nothing).
fn mount_peer_tls(
    statefulset: &mut StatefulSet,
    secret_name: &str,
    cluster: &MesosMasterCluster,
    names: &Names,
    config: &MemberConfig,
    service_ips: &BTreeMap<Ordinal, IpAddr>,
) -> Result<(), ResourceError> {
    let server_names = config
        .whitelist
        .iter()
        .map(|ordinal| {
            member_address(cluster, names, *ordinal, service_ips)
                .map(|address| format!("{address}={}", member_tls_name(names, *ordinal)))
        })
        .collect::<Result<Vec<_>, _>>()?
        .join(",");
    let Some(pod) = statefulset
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
    else {
        return Ok(());
    };
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: PEER_TLS_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.to_owned()),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    for container in &mut pod.containers {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: PEER_TLS_VOLUME.into(),
                mount_path: PEER_TLS_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        container.env.get_or_insert_with(Vec::new).extend([
            env("MESOS_PEER_TLS", "required"),
            env(
                "MESOS_PEER_TLS_CERT_FILE",
                format!("{PEER_TLS_DIR}/tls.crt"),
            ),
            env("MESOS_PEER_TLS_KEY_FILE", format!("{PEER_TLS_DIR}/tls.key")),
            env("MESOS_PEER_TLS_CA_FILE", format!("{PEER_TLS_DIR}/ca.crt")),
            env("MESOS_PEER_TLS_SERVER_NAMES", server_names.clone()),
        ]);
    }
    Ok(())
}

/// The member Service whose cluster IP is member `ordinal`'s stable address.
pub fn member_service(
    cluster: &MesosMasterCluster,
    names: &Names,
    ordinal: Ordinal,
) -> Result<Service, ResourceError> {
    Ok(Service {
        metadata: meta(cluster, names, names.member_service(ordinal), Some(ordinal))?,
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(
                LABEL_POD_NAME.to_string(),
                names.pod(ordinal),
            )])),
            ports: Some(master_port(cluster)),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The per-member external Service of `externalAccess`, if the spec asks for one.
pub fn external_service(
    cluster: &MesosMasterCluster,
    names: &Names,
    ordinal: Ordinal,
) -> Result<Option<Service>, ResourceError> {
    let Some(external) = &cluster.spec.external_access else {
        return Ok(None);
    };
    let Some(service_type) = external.service_type else {
        return Ok(None);
    };
    let mut ports = master_port(cluster);
    if let Some(port) = external
        .advertise
        .get(ordinal as usize)
        .and_then(|entry| entry.port)
    {
        ports[0].port = i32::from(port);
    }
    Ok(Some(Service {
        metadata: meta(
            cluster,
            names,
            names.external_service(ordinal),
            Some(ordinal),
        )?,
        spec: Some(ServiceSpec {
            type_: Some(
                match service_type {
                    ExternalServiceType::NodePort => "NodePort",
                    ExternalServiceType::LoadBalancer => "LoadBalancer",
                }
                .into(),
            ),
            selector: Some(BTreeMap::from([(
                LABEL_POD_NAME.to_string(),
                names.pod(ordinal),
            )])),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }))
}

/// Headless Service: the StatefulSets' stable DNS names.
pub fn headless_service(
    cluster: &MesosMasterCluster,
    names: &Names,
) -> Result<Service, ResourceError> {
    Ok(Service {
        metadata: meta(cluster, names, names.headless_service(), None)?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(names)),
            ports: Some(master_port(cluster)),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// Client Service: any ready master (followers redirect to the leader).
pub fn client_service(
    cluster: &MesosMasterCluster,
    names: &Names,
) -> Result<Service, ResourceError> {
    Ok(Service {
        metadata: meta(cluster, names, names.client_service(), None)?,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(names)),
            ports: Some(master_port(cluster)),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// Leader Service: the pod the operator labels as leader.
pub fn leader_service(
    cluster: &MesosMasterCluster,
    names: &Names,
) -> Result<Service, ResourceError> {
    let mut selector = selector_labels(names);
    selector.insert(LABEL_LEADER.to_string(), "true".to_string());
    Ok(Service {
        metadata: meta(cluster, names, names.leader_service(), None)?,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(master_port(cluster)),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// PodDisruptionBudget keeping `quorum` masters up through voluntary disruptions
/// (`minAvailable = quorum`: with 2q-1 masters, at most q-1 may be evicted). The
/// operator's own restarts are pod deletions, which a PDB does not gate; the planner
/// gates those.
pub fn pod_disruption_budget(
    cluster: &MesosMasterCluster,
    names: &Names,
    quorum: u32,
) -> Result<PodDisruptionBudget, ResourceError> {
    Ok(PodDisruptionBudget {
        metadata: meta(cluster, names, names.pdb(), None)?,
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(quorum as i32)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(names)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

/// NetworkPolicy: only the ensemble's members and the operator (any namespace)
/// reach the master port.
pub fn network_policy(
    cluster: &MesosMasterCluster,
    names: &Names,
) -> Result<NetworkPolicy, ResourceError> {
    Ok(NetworkPolicy {
        metadata: meta(cluster, names, names.network_policy(), None)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(names)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![
                    NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(names)),
                            ..LabelSelector::default()
                        }),
                        ..NetworkPolicyPeer::default()
                    },
                    NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector::default()),
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                LABEL_NAME.to_string(),
                                OPERATOR_APP_NAME.to_string(),
                            )])),
                            ..LabelSelector::default()
                        }),
                        ..NetworkPolicyPeer::default()
                    },
                    // The cluster's backup and restore Jobs (`kubernetes::jobs`).
                    NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                crate::operator::api::LABEL_REGISTRY_CLIENT.to_string(),
                                names.cluster.clone(),
                            )])),
                            ..LabelSelector::default()
                        }),
                        ..NetworkPolicyPeer::default()
                    },
                ]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(cluster.spec.port))),
                    protocol: Some("TCP".into()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// The ensemble token Secret around `token` (hex of [`TOKEN_BYTES`] random bytes).
/// Created once; never applied again, so a token is never replaced under running
/// members.
pub fn token_secret(
    cluster: &MesosMasterCluster,
    names: &Names,
    token: String,
) -> Result<Secret, ResourceError> {
    Ok(Secret {
        metadata: meta(cluster, names, names.token_secret(), None)?,
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.into_bytes()),
        )])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    })
}

/// The key of the export document in the registry export ConfigMap's `binaryData`.
pub const REGISTRY_EXPORT_KEY: &str = "registry-export.json";

/// The largest export the operator stores. Kubernetes refuses a ConfigMap whose
/// data exceeds 1 MiB (1,048,576 bytes); 48,576 bytes stay free for the key and
/// whatever the API server counts besides the value.
pub const REGISTRY_EXPORT_MAX_BYTES: usize = 1_000_000;

/// The ConfigMap holding a `Preserve` exit's registry export (`binaryData`: the
/// document is opaque bytes to the operator). Owned by the cluster, so deleting the
/// cluster deletes it; `import_skipped` carries the reason an import left it unused.
pub fn registry_export_config_map(
    cluster: &MesosMasterCluster,
    names: &Names,
    document: Vec<u8>,
    import_skipped: Option<String>,
) -> Result<ConfigMap, ResourceError> {
    let mut metadata = meta(cluster, names, names.registry_export(), None)?;
    if let Some(why) = import_skipped {
        metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_IMPORT_SKIPPED.to_string(),
            why,
        )]));
    }
    Ok(ConfigMap {
        metadata,
        binary_data: Some(BTreeMap::from([(
            REGISTRY_EXPORT_KEY.to_string(),
            ByteString(document),
        )])),
        ..ConfigMap::default()
    })
}

/// Hex encoding of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::api::MesosMasterClusterSpec;

    fn cluster() -> MesosMasterCluster {
        let mut cluster = MesosMasterCluster::new("prod", MesosMasterClusterSpec::with_replicas(3));
        cluster.metadata.namespace = Some("db".into());
        cluster.metadata.uid = Some("uid-1".into());
        cluster
    }

    fn ips(count: u32) -> BTreeMap<Ordinal, IpAddr> {
        (0..count)
            .map(|ordinal| (ordinal, IpAddr::from([10, 96, 0, ordinal as u8 + 10])))
            .collect()
    }

    fn env_value(sts: &StatefulSet, name: &str) -> Option<String> {
        sts.spec.as_ref()?.template.spec.as_ref()?.containers[0]
            .env
            .as_ref()?
            .iter()
            .find(|var| var.name == name)?
            .value
            .clone()
    }

    #[test]
    fn member_statefulset_mounts_the_tls_secret_and_names_every_member() {
        let mut cluster = cluster();
        let names = Names::of(&cluster).expect("names");
        let config = MemberConfig::ensemble(3);
        let plain = member_statefulset(&cluster, &names, 1, &config, &ips(3)).expect("builds");
        assert_eq!(env_value(&plain, "MESOS_PEER_TLS"), None);

        cluster.spec.tls = Some(crate::operator::api::TlsSpec {
            secret_name: "prod-members-tls".into(),
        });
        let sts = member_statefulset(&cluster, &names, 1, &config, &ips(3)).expect("builds");
        assert_eq!(
            env_value(&sts, "MESOS_PEER_TLS").as_deref(),
            Some("required")
        );
        assert_eq!(
            env_value(&sts, "MESOS_PEER_TLS_CERT_FILE").as_deref(),
            Some("/etc/mesos/peer-tls/tls.crt")
        );
        assert_eq!(
            env_value(&sts, "MESOS_PEER_TLS_KEY_FILE").as_deref(),
            Some("/etc/mesos/peer-tls/tls.key")
        );
        assert_eq!(
            env_value(&sts, "MESOS_PEER_TLS_CA_FILE").as_deref(),
            Some("/etc/mesos/peer-tls/ca.crt")
        );
        assert_eq!(
            env_value(&sts, "MESOS_PEER_TLS_SERVER_NAMES").as_deref(),
            Some(
                "10.96.0.10:5050=prod-0-0.prod-members.db.svc,\
                 10.96.0.11:5050=prod-1-0.prod-members.db.svc,\
                 10.96.0.12:5050=prod-2-0.prod-members.db.svc"
            )
        );
        let pod = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == PEER_TLS_VOLUME)
            .expect("TLS volume");
        assert_eq!(
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("prod-members-tls")
        );
        let mount = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == PEER_TLS_VOLUME)
            .expect("TLS mount");
        assert_eq!(mount.mount_path, PEER_TLS_DIR);
        assert_eq!(mount.read_only, Some(true));
        // The token stays mounted: it is the second factor.
        assert!(env_value(&sts, "MESOS_ENSEMBLE_TOKEN_FILE").is_some());
    }

    #[test]
    fn member_statefulset_carries_exactly_its_quorum_and_whitelist() {
        let cluster = cluster();
        let names = Names::of(&cluster).expect("names");
        let config = MemberConfig::ensemble(3);
        let sts = member_statefulset(&cluster, &names, 1, &config, &ips(3)).expect("builds");
        assert_eq!(sts.metadata.name.as_deref(), Some("prod-1"));
        assert_eq!(env_value(&sts, "MESOS_QUORUM").as_deref(), Some("2"));
        assert_eq!(
            env_value(&sts, "MESOS_MASTERS").as_deref(),
            Some("10.96.0.10:5050,10.96.0.11:5050,10.96.0.12:5050")
        );
        assert_eq!(
            env_value(&sts, "MESOS_ADVERTISE_IP").as_deref(),
            Some("10.96.0.11")
        );
        let spec = sts.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.update_strategy
                .as_ref()
                .and_then(|s| s.type_.as_deref()),
            Some("OnDelete")
        );
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone());
        assert_eq!(
            config_from_annotations(&annotations.expect("annotations")),
            Some(config)
        );
        let pod = spec.template.spec.as_ref().expect("pod spec");
        assert_eq!(
            pod.containers[0].command.as_deref(),
            Some(&[MASTER_COMMAND.to_string()][..])
        );
        assert_eq!(
            pod.security_context.as_ref().and_then(|s| s.fs_group),
            Some(65532)
        );
    }

    #[test]
    fn a_member_without_a_service_ip_has_no_address_yet() {
        let cluster = cluster();
        let names = Names::of(&cluster).expect("names");
        let error = member_statefulset(&cluster, &names, 0, &MemberConfig::ensemble(3), &ips(2))
            .expect_err("member 2 has no IP");
        assert!(error.to_string().contains("prod-member-2"), "{error}");
    }

    #[test]
    fn annotations_refuse_malformed_whitelists() {
        let annotations = BTreeMap::from([
            (ANNOTATION_QUORUM.to_string(), "2".to_string()),
            (ANNOTATION_WHITELIST.to_string(), "0,x".to_string()),
        ]);
        assert_eq!(config_from_annotations(&annotations), None);
    }
}
