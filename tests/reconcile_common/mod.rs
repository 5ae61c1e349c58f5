//! A small simulated Kubernetes for the reconcile tests.
//!
//! The API itself is `kube-fake-client` 0.3: an in-memory `kube::Client` backend
//! with get/list/create/patch/replace/delete, label selectors, resourceVersion
//! conflicts, a status subresource, and server-side apply (treated as a merge
//! patch, which is enough for objects the operator always writes whole). It has no
//! controllers, so this harness plays them between two reconciles ([`World::tick`]):
//! the Service IP allocator, the StatefulSet controller (one pod and its claim from
//! each StatefulSet of one replica), and the kubelet plus the masters' replicated
//! log (a new member catches up from a voting peer; a new ensemble initializes once
//! every whitelisted member has a pod). [`FakeMasters`] answers `/log/status` as a
//! master started with the pod's *current* environment would: its `MESOS_QUORUM`
//! and `MESOS_MASTERS`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodCondition, PodStatus, Service};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use mesos_operator::master::api::{LogStatus, ReplicaStatus};
use mesos_operator::master::export_document::ExportDocument;
use mesos_operator::master::registry::Registry;
use mesos_operator::operator::api::Ordinal;
use mesos_operator::operator::api::{MesosMasterCluster, MesosMasterClusterSpec};
use mesos_operator::operator::api::{LABEL_MEMBER, LABEL_NAME};
use mesos_operator::operator::kubernetes::context::Context;
use mesos_operator::operator::kubernetes::metrics::Metrics;
use mesos_operator::operator::kubernetes::reconcile;
use mesos_operator::operator::kubernetes::resources::MASTER_APP_NAME;
use mesos_operator::operator::master_client::{
    Call, ImportOutcome, LocalExport, MasterCallError, MasterClient, MemberTarget, Redirect,
};
use mesos_operator::operator::planner::MemberConfig;

pub const NAMESPACE: &str = "db";
pub const NAME: &str = "prod";
/// A finalizer of some other controller (see [`World::new`]).
pub const OTHER_FINALIZER: &str = "example.com/other";
/// The simulated log's state of a pod, kept on the pod by the harness.
const REPLICA: &str = "test.mesos/replica";
/// On a claim whose volume holds a log.
const HAS_LOG: &str = "test.mesos/has-log";
/// A pod whose master is gone (killed, its node lost): it answers nothing.
pub const DOWN: &str = "test.mesos/down";
/// Bound on reconciles per transition (1 -> 9 takes about 40 steps plus waits).
pub const MAX_ROUNDS: usize = 200;

pub struct World {
    /// The harness' own client (the simulated controllers, the assertions).
    pub client: kube::Client,
    /// What every operator started by [`World::fresh_context`] talks through: the
    /// same API, every request recorded in `requests`.
    operator_client: kube::Client,
    next_ip: AtomicU32,
    /// The masters' registries: outlives every operator restart, as masters do.
    pub registry: Arc<Mutex<FakeRegistry>>,
    /// Every request an operator sent to the API, in order (see [`Recorded`]).
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// Set by [`World::keep_one_operator`]: reconciles share this context (one
    /// long-running operator) instead of starting a fresh one each time.
    long_running: Mutex<Option<Arc<Context>>>,
}

fn env(pod: &Pod, name: &str) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|var| var.name == name)?
        .value
        .clone()
}

pub fn ordinal(meta: &ObjectMeta) -> Option<Ordinal> {
    meta.labels.as_ref()?.get(LABEL_MEMBER)?.parse().ok()
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

impl World {
    pub async fn new(spec: MesosMasterClusterSpec) -> Self {
        let mut cluster = MesosMasterCluster::new(NAME, spec);
        cluster.metadata.namespace = Some(NAMESPACE.into());
        // kube-runtime adds the first finalizer with a JSON patch that tests
        // `/metadata/finalizers` for null; the fake's JSON patch refuses a test of a
        // missing path (a real API server accepts it). Another party's finalizer
        // takes the other branch of the helper: append to an existing list.
        cluster.metadata.finalizers = Some(vec![OTHER_FINALIZER.to_string()]);
        let fake = kube_fake_client::ClientBuilder::new()
            .with_resource::<MesosMasterCluster>()
            // Not `with_status_subresource`: it needs `Default` on the CRD type, which
            // the spec has none of. Without it a status PUT writes the whole object;
            // the operator sends the object it read, with its resourceVersion, so a
            // spec changed in between is a conflict, never overwritten.
            .with_object(cluster)
            .build()
            .await
            .expect("fake API");
        let requests = Arc::new(Mutex::new(Vec::new()));
        Self {
            operator_client: recording_client(fake.clone(), requests.clone()),
            client: fake,
            next_ip: AtomicU32::new(10),
            registry: Arc::new(Mutex::new(FakeRegistry::default())),
            requests,
            long_running: Mutex::new(None),
        }
    }

    /// From now on one operator does every reconcile (its event recorder, for one,
    /// remembers what it published).
    pub fn keep_one_operator(&self) {
        *self.long_running.lock().expect("context") = Some(self.fresh_context());
    }

    /// The requests recorded so far; `clear_requests` starts a new record.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("record").clone()
    }

    pub fn clear_requests(&self) {
        self.requests.lock().expect("record").clear();
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// A fresh operator: new client handle, recorder and metrics; nothing carried over.
    pub fn fresh_context(&self) -> Arc<Context> {
        Arc::new(Context::new(
            self.operator_client.clone(),
            Arc::new(FakeMasters {
                client: self.client.clone(),
                registry: self.registry.clone(),
            }),
            Metrics::default(),
            Some("test-operator".into()),
        ))
    }

    pub async fn cluster(&self) -> MesosMasterCluster {
        self.api::<MesosMasterCluster>()
            .get(NAME)
            .await
            .expect("cluster exists")
    }

    pub async fn set_spec(&self, change: impl FnOnce(&mut MesosMasterClusterSpec)) {
        let mut cluster = self.cluster().await;
        change(&mut cluster.spec);
        let patch = serde_json::json!({ "spec": cluster.spec });
        self.api::<MesosMasterCluster>()
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("spec patched");
    }

    /// One reconcile by an operator that just started (crash/restart between any two).
    pub async fn reconcile_once(&self) {
        let cluster = Arc::new(self.cluster().await);
        let long_running = self.long_running.lock().expect("context").clone();
        let ctx = long_running.unwrap_or_else(|| self.fresh_context());
        reconcile::reconcile(cluster, ctx)
            .await
            .expect("reconcile succeeds");
    }

    pub async fn pods(&self) -> BTreeMap<Ordinal, Pod> {
        self.api::<Pod>()
            .list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .into_iter()
            .filter_map(|pod| ordinal(&pod.metadata).map(|ordinal| (ordinal, pod)))
            .collect()
    }

    pub async fn claims(&self) -> BTreeMap<Ordinal, PersistentVolumeClaim> {
        self.api::<PersistentVolumeClaim>()
            .list(&ListParams::default())
            .await
            .expect("claims")
            .items
            .into_iter()
            .filter_map(|claim| ordinal(&claim.metadata).map(|ordinal| (ordinal, claim)))
            .collect()
    }

    pub async fn statefulsets(&self) -> BTreeMap<Ordinal, StatefulSet> {
        self.api::<StatefulSet>()
            .list(&ListParams::default())
            .await
            .expect("statefulsets")
            .items
            .into_iter()
            .filter_map(|sts| ordinal(&sts.metadata).map(|ordinal| (ordinal, sts)))
            .collect()
    }

    pub async fn services(&self) -> BTreeMap<String, Service> {
        self.api::<Service>()
            .list(&ListParams::default())
            .await
            .expect("services")
            .items
            .into_iter()
            .map(|service| (service.name_any(), service))
            .collect()
    }

    pub async fn events(&self) -> Vec<K8sEvent> {
        self.api::<K8sEvent>()
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
    }

    /// Member ordinal -> address, from the member Services' cluster IPs.
    pub async fn member_addresses(&self) -> BTreeMap<Ordinal, String> {
        self.services()
            .await
            .into_iter()
            .filter(|(name, _)| name.starts_with(&format!("{NAME}-member-")))
            .filter_map(|(_, service)| {
                let ordinal = ordinal(&service.metadata)?;
                let ip = service.spec?.cluster_ip?;
                Some((ordinal, format!("{ip}:5050")))
            })
            .collect()
    }

    /// The configuration pod `ordinal` runs, read from its environment (not from the
    /// operator's annotations), with the whitelist mapped back to ordinals.
    pub async fn running_configs(&self) -> BTreeMap<Ordinal, MemberConfig> {
        let addresses = self.member_addresses().await;
        let by_address: BTreeMap<String, Ordinal> = addresses
            .iter()
            .map(|(ordinal, address)| (address.clone(), *ordinal))
            .collect();
        self.pods()
            .await
            .into_iter()
            .map(|(ordinal, pod)| {
                let quorum = env(&pod, "MESOS_QUORUM")
                    .and_then(|q| q.parse().ok())
                    .unwrap_or(0);
                let mut whitelist: Vec<Ordinal> = env(&pod, "MESOS_MASTERS")
                    .unwrap_or_default()
                    .split(',')
                    .map(|address| *by_address.get(address).unwrap_or(&u32::MAX))
                    .collect();
                whitelist.sort();
                (ordinal, MemberConfig { quorum, whitelist })
            })
            .collect()
    }

    fn ip(&self, prefix: [u8; 2]) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::SeqCst);
        format!("{}.{}.{}.{}", prefix[0], prefix[1], n / 250, n % 250 + 1)
    }

    /// Time passes: what Kubernetes' controllers, the kubelet and the masters do
    /// between two reconciles.
    pub async fn tick(&self) {
        // Service IP allocation.
        for (name, service) in self.services().await {
            let spec = service.spec.clone().unwrap_or_default();
            if spec.cluster_ip.is_none() {
                let patch = serde_json::json!({ "spec": { "clusterIP": self.ip([10, 96]) } });
                self.api::<Service>()
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("ip allocated");
            }
        }

        // The log: pods that existed before this tick make progress.
        let pods = self.pods().await;
        let configs = self.running_configs().await;
        let state =
            |pod: &Pod| annotation(&pod.metadata, REPLICA).unwrap_or_else(|| "EMPTY".into());
        let mut progress: BTreeMap<Ordinal, &str> = BTreeMap::new();
        for (ordinal, pod) in &pods {
            let config = &configs[ordinal];
            match state(pod).as_str() {
                "RECOVERING" => {
                    progress.insert(*ordinal, "VOTING");
                }
                "EMPTY" => {
                    let voting_peer = config
                        .whitelist
                        .iter()
                        .any(|peer| pods.get(peer).is_some_and(|peer| state(peer) == "VOTING"));
                    let all_empty_present = config
                        .whitelist
                        .iter()
                        .all(|peer| pods.get(peer).is_some_and(|peer| state(peer) == "EMPTY"));
                    if voting_peer || all_empty_present {
                        progress.insert(*ordinal, "VOTING");
                    }
                }
                _ => {}
            }
        }
        for (ordinal, next) in progress {
            self.set_replica(&pods[&ordinal], next).await;
            let claim = format!("work-{NAME}-{ordinal}-0");
            let patch = serde_json::json!({ "metadata": { "annotations": { HAS_LOG: "true" } } });
            self.api::<PersistentVolumeClaim>()
                .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("claim marked");
        }

        // The StatefulSet controller: a missing pod (and its claim) from the template.
        let pods = self.pods().await;
        let claims = self.claims().await;
        for (ordinal, sts) in self.statefulsets().await {
            if pods.contains_key(&ordinal) {
                continue;
            }
            let spec = sts.spec.clone().expect("sts spec");
            let pod_name = format!("{}-0", sts.name_any());
            let claim_template = spec.volume_claim_templates.clone().unwrap_or_default();
            let has_log = match claims.get(&ordinal) {
                Some(claim) => annotation(&claim.metadata, HAS_LOG).is_some(),
                None => {
                    for template in &claim_template {
                        let mut claim = template.clone();
                        claim.metadata.name = Some(format!("{}-{}", template.name_any(), pod_name));
                        claim.metadata.namespace = Some(NAMESPACE.into());
                        self.api::<PersistentVolumeClaim>()
                            .create(&PostParams::default(), &claim)
                            .await
                            .expect("claim created");
                    }
                    false
                }
            };
            let template = spec.template.clone();
            let mut metadata = template.metadata.clone().unwrap_or_default();
            metadata.name = Some(pod_name.clone());
            metadata.namespace = Some(NAMESPACE.into());
            metadata.labels.get_or_insert_with(BTreeMap::new).insert(
                "statefulset.kubernetes.io/pod-name".into(),
                pod_name.clone(),
            );
            metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(
                    REPLICA.into(),
                    if has_log { "RECOVERING" } else { "EMPTY" }.into(),
                );
            metadata.owner_references = sts.controller_owner_ref(&()).map(|owner| vec![owner]);
            let pod = Pod {
                metadata,
                spec: template.spec.clone(),
                status: Some(PodStatus {
                    pod_ip: Some(self.ip([10, 244])),
                    phase: Some("Running".into()),
                    ..PodStatus::default()
                }),
            };
            self.api::<Pod>()
                .create(&PostParams::default(), &pod)
                .await
                .expect("pod created");
        }
    }

    async fn set_replica(&self, pod: &Pod, replica: &str) {
        let ready = if replica == "VOTING" { "True" } else { "False" };
        let metadata = serde_json::json!({ "metadata": { "annotations": { REPLICA: replica } } });
        let status = serde_json::json!({
            "status": { "conditions": [ { "type": "Ready", "status": ready } ] },
        });
        let pods = self.api::<Pod>();
        pods.patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&metadata),
        )
        .await
        .expect("pod progressed");
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("pod ready");
    }

    /// Checks the safety invariant on what exists now: every pod and volume is in
    /// the whitelist every pod runs with (so a removed member's volume is gone
    /// before anyone runs without it), every two quorums intersect among the pods,
    /// and no whitelist is longer than 2q-1.
    pub async fn check_invariants(&self) {
        let configs = self.running_configs().await;
        let claims = self.claims().await;
        let present: BTreeSet<Ordinal> = configs.keys().chain(claims.keys()).copied().collect();
        for (ordinal, config) in &configs {
            for other in &present {
                assert!(
                    config.whitelist.contains(other),
                    "member {other} exists but {NAME}-{ordinal} runs with {config:?}"
                );
            }
            assert!(
                (config.whitelist.len() as u32) < 2 * config.quorum,
                "{NAME}-{ordinal}: {config:?}"
            );
            for other in configs.values() {
                assert!(
                    config.quorum + other.quorum > configs.len() as u32,
                    "quorums {} and {} need not intersect among {} pods",
                    config.quorum,
                    other.quorum,
                    configs.len()
                );
            }
        }
    }

    /// Reconciles (each time as a freshly started operator) and lets time pass
    /// until the cluster runs `replicas` masters with their canonical configuration
    /// and reports Running. Returns the steps the status recorded, in order.
    pub async fn converge(&self, replicas: u32) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        // The transition the lines belong to: an earlier one stays in the status
        // until this one's first step replaces it.
        let mut current: Option<(i32, i32)> = None;
        for _ in 0..MAX_ROUNDS {
            self.reconcile_once().await;
            let status = self.cluster().await.status.unwrap_or_default();
            if let Some(transition) = &status.transition {
                if current != Some((transition.from, transition.to)) {
                    current = Some((transition.from, transition.to));
                    lines.clear();
                }
                for step in &transition.steps {
                    if !lines.contains(&step.description) {
                        lines.push(step.description.clone());
                    }
                }
            }
            self.check_invariants().await;
            let configs = self.running_configs().await;
            let settled = configs.len() as u32 == replicas
                && configs
                    .values()
                    .all(|config| *config == MemberConfig::ensemble(replicas));
            if settled && status.phase == Some(mesos_operator::operator::api::Phase::Running) {
                return lines;
            }
            self.tick().await;
            self.check_invariants().await;
        }
        panic!(
            "{NAME} did not reach {replicas} masters in {MAX_ROUNDS} reconciles; status: {:#?}",
            self.cluster().await.status
        );
    }
}

/// A master's advertised address, replica status, quorum and whitelist.
type MasterView = (SocketAddr, ReplicaStatus, usize, Vec<SocketAddr>);

/// `/log/status` as a master started with the pod's current environment answers,
/// and the registry calls of a `Preserve` exit against [`FakeRegistry`].
pub struct FakeMasters {
    client: kube::Client,
    registry: Arc<Mutex<FakeRegistry>>,
}

/// One call a master received: which, on which pod, into which log (the claim UID of
/// member 0's volume: a wipe starts a new log), and how many members were voting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryCall {
    pub call: &'static str,
    pub pod: String,
    pub log: String,
    pub voting_members: usize,
}

/// The registries of the masters' logs, keyed by log (see [`RegistryCall::log`]).
#[derive(Debug, Default)]
pub struct FakeRegistry {
    /// The registry each log holds; a log missing here is empty.
    pub data: BTreeMap<String, serde_json::Value>,
    /// Logs whose registry is sealed.
    pub sealed: BTreeSet<String>,
    pub calls: Vec<RegistryCall>,
    /// Padding added to the export document, to make it too large to keep.
    pub export_padding_bytes: usize,
    /// An import into a log never sealed finds data there already (HTTP 409).
    pub new_logs_hold_data: bool,
    /// The next seal takes effect but its answer is lost (a crash of the operator
    /// between the seal and storing the document looks the same to the master).
    pub lose_next_seal_answer: bool,
}

impl FakeRegistry {
    pub fn calls_named(&self, call: &str) -> Vec<RegistryCall> {
        self.calls
            .iter()
            .filter(|c| c.call == call)
            .cloned()
            .collect()
    }
}

/// The log id a fake master reports: derived from the UID of member 0's claim (a
/// wipe of the ensemble draws a new one), 7 while there is none.
pub fn log_id_of(log: &str) -> u64 {
    if log.is_empty() {
        return 7;
    }
    log.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl FakeMasters {
    async fn log_id(&self, namespace: &str) -> u64 {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let uid = claims
            .get_opt(&format!("work-{NAME}-0-0"))
            .await
            .ok()
            .flatten()
            .and_then(|claim| claim.uid())
            .unwrap_or_default();
        log_id_of(&uid)
    }

    /// The log the member's pod is in and how many members vote, or why not the
    /// leader (as a master not leading answers: 307 or 503).
    async fn leader_call(
        &self,
        target: &MemberTarget,
        call: Call,
        redirect: Redirect,
    ) -> Result<RegistryCall, MasterCallError> {
        // The Kubernetes loop acts on the member the planner named, never on the
        // one a redirect names.
        assert_eq!(redirect, Redirect::Report, "{call} on {}", target.name);
        let status = self.log_status(target.clone()).await.map_err(|error| {
            MasterCallError::Unreachable {
                member: target.name.clone(),
                call,
                reason: error.to_string(),
            }
        })?;
        if !status.elected {
            return Err(MasterCallError::NotLeader {
                member: target.name.clone(),
                call,
                status: if status.leader.is_some() { 307 } else { 503 },
                location: status.leader.map(|leader| leader.to_string()),
            });
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), NAMESPACE);
        let log = claims
            .get(&format!("work-{NAME}-0-0"))
            .await
            .map_err(|error| MasterCallError::Unreachable {
                member: target.name.clone(),
                call,
                reason: error.to_string(),
            })?
            .uid()
            .unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let voting_members = pods
            .list(&ListParams::default())
            .await
            .map_err(|error| MasterCallError::Unreachable {
                member: target.name.clone(),
                call,
                reason: error.to_string(),
            })?
            .items
            .iter()
            .filter(|pod| annotation(&pod.metadata, REPLICA).as_deref() == Some("VOTING"))
            .count();
        Ok(RegistryCall {
            call: call_name(call),
            pod: target.name.clone(),
            log,
            voting_members,
        })
    }
}

/// What [`RegistryCall::call`] says of a call.
fn call_name(call: Call) -> &'static str {
    match call {
        Call::Status => "status",
        Call::Seal => "seal",
        Call::Unseal => "unseal",
        Call::Import => "import",
        Call::Export => "export",
        Call::LocalExport => "local export",
    }
}

/// A registry as the fake masters hold it: two agents marked unreachable and a weight.
pub fn sample_registry() -> serde_json::Value {
    let registry = Registry {
        unreachable: BTreeMap::from([("agent-1".into(), 1), ("agent-2".into(), 2)]),
        weights: BTreeMap::from([("ops".into(), 2.0)]),
        ..Registry::default()
    };
    serde_json::to_value(registry).expect("a registry encodes")
}

/// A fake log's registry (`null`: the log holds none) as the master's type.
fn typed_registry(registry: &serde_json::Value) -> Registry {
    if registry.is_null() {
        return Registry::default();
    }
    serde_json::from_value(registry.clone()).expect("the fake holds real registries")
}

/// The export document of `registry` (a real one, checksum and all), padded by a
/// weight whose role name is `padding_bytes` long.
pub fn export_document(registry: &serde_json::Value, padding_bytes: usize) -> Vec<u8> {
    let mut registry = typed_registry(registry);
    if padding_bytes > 0 {
        registry.weights.insert("x".repeat(padding_bytes), 1.0);
    }
    ExportDocument::new(&registry, 7, 100).to_bytes()
}

impl MasterClient for FakeMasters {
    fn export_local_registry(
        &self,
        target: MemberTarget,
    ) -> BoxFuture<'_, Result<LocalExport, MasterCallError>> {
        Box::pin(async move {
            let status = self.log_status(target.clone()).await.map_err(|error| {
                MasterCallError::Unreachable {
                    member: target.name.clone(),
                    call: Call::LocalExport,
                    reason: error.to_string(),
                }
            })?;
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), NAMESPACE);
            let log = claims
                .get_opt(&format!("work-{NAME}-0-0"))
                .await
                .ok()
                .flatten()
                .and_then(|claim| claim.uid())
                .unwrap_or_default();
            let mut registry = self.registry.lock().expect("registry");
            let data = registry
                .data
                .get(&log)
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            registry.calls.push(RegistryCall {
                call: call_name(Call::LocalExport),
                pod: target.name.clone(),
                log,
                voting_members: 0,
            });
            let document = ExportDocument::new(
                &typed_registry(&data),
                status.log_id.unwrap_or(0),
                status.learned.saturating_sub(1),
            );
            Ok(LocalExport {
                document: document.to_bytes(),
                learned_end: Some(status.learned),
                end: Some(status.end),
            })
        })
    }

    fn seal_registry(
        &self,
        target: MemberTarget,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<Vec<u8>, MasterCallError>> {
        Box::pin(async move {
            let call = self.leader_call(&target, Call::Seal, redirect).await?;
            let mut registry = self.registry.lock().expect("registry");
            registry.sealed.insert(call.log.clone());
            let data = registry
                .data
                .get(&call.log)
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            let document = export_document(&data, registry.export_padding_bytes);
            registry.calls.push(call);
            if std::mem::take(&mut registry.lose_next_seal_answer) {
                return Err(MasterCallError::Unreachable {
                    member: target.name.clone(),
                    call: Call::Seal,
                    reason: "connection reset".into(),
                });
            }
            Ok(document)
        })
    }

    fn unseal_registry(
        &self,
        target: MemberTarget,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<(), MasterCallError>> {
        Box::pin(async move {
            let call = self.leader_call(&target, Call::Unseal, redirect).await?;
            let mut registry = self.registry.lock().expect("registry");
            registry.sealed.remove(&call.log);
            registry.calls.push(call);
            Ok(())
        })
    }

    fn import_registry(
        &self,
        target: MemberTarget,
        document: Vec<u8>,
        redirect: Redirect,
    ) -> BoxFuture<'_, Result<ImportOutcome, MasterCallError>> {
        Box::pin(async move {
            let call = self.leader_call(&target, Call::Import, redirect).await?;
            let parsed: serde_json::Value =
                serde_json::from_slice(&document).map_err(|error| MasterCallError::Refused {
                    member: target.name.clone(),
                    call: Call::Import,
                    status: 400,
                    body: error.to_string(),
                })?;
            let mut registry = self.registry.lock().expect("registry");
            let log = call.log.clone();
            registry.calls.push(call);
            let fresh_log = !registry.sealed.contains(&log);
            if registry.data.contains_key(&log) || (registry.new_logs_hold_data && fresh_log) {
                return Ok(ImportOutcome::AlreadyHeldData);
            }
            registry.data.insert(log, parsed["registry"].clone());
            Ok(ImportOutcome::Imported)
        })
    }

    fn export_registry(
        &self,
        target: MemberTarget,
        _: Redirect,
    ) -> BoxFuture<'_, Result<Vec<u8>, MasterCallError>> {
        panic!(
            "the Kubernetes loop never exports a leader's registry (backups run in a Job); asked of {}",
            target.name
        )
    }

    fn log_status(
        &self,
        target: MemberTarget,
    ) -> BoxFuture<'_, Result<LogStatus, MasterCallError>> {
        Box::pin(self.status_from_pods(target))
    }
}

/// One request the operator's client sent: method, path (with query) and body.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// A `kube::Client` that records every request, then hands it to `inner` (the fake
/// API): what the operator asks of the API server, for the RBAC and ordering tests.
fn recording_client(inner: kube::Client, requests: Arc<Mutex<Vec<Recorded>>>) -> kube::Client {
    let service = tower::service_fn(move |request: hyper::Request<kube::client::Body>| {
        let inner = inner.clone();
        let requests = requests.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await?;
            requests.lock().expect("record").push(Recorded {
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map(|path| path.to_string())
                    .unwrap_or_default(),
                body: body.to_vec(),
            });
            let request = hyper::Request::from_parts(parts, kube::client::Body::from(body));
            inner.send(request).await
        }
    });
    kube::Client::new(service, NAMESPACE)
}

impl FakeMasters {
    /// `/log/status` as a master started with the pod's current environment would
    /// answer it.
    async fn status_from_pods(&self, target: MemberTarget) -> Result<LogStatus, MasterCallError> {
        {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
            let unreachable = |reason: &str| MasterCallError::Unreachable {
                member: target.name.clone(),
                call: Call::Status,
                reason: reason.to_string(),
            };
            let all = pods
                .list(&ListParams::default().labels(&format!("{LABEL_NAME}={MASTER_APP_NAME}")))
                .await
                .map_err(|error| unreachable(&error.to_string()))?
                .items;
            let view = |pod: &Pod| -> Option<MasterView> {
                if annotation(&pod.metadata, DOWN).is_some() {
                    return None;
                }
                let advertise: IpAddr = env(pod, "MESOS_ADVERTISE_IP")?.parse().ok()?;
                let port: u16 = env(pod, "MESOS_ADVERTISE_PORT")?.parse().ok()?;
                let quorum = env(pod, "MESOS_QUORUM")?.parse().ok()?;
                let masters = env(pod, "MESOS_MASTERS")?
                    .split(',')
                    .filter_map(|address| address.parse().ok())
                    .collect();
                let status = match annotation(&pod.metadata, REPLICA).as_deref() {
                    Some("VOTING") => ReplicaStatus::Voting,
                    Some("RECOVERING") => ReplicaStatus::Recovering,
                    _ => ReplicaStatus::Empty,
                };
                Some((SocketAddr::new(advertise, port), status, quorum, masters))
            };
            let mut members: Vec<(Ordinal, MasterView)> = all
                .iter()
                .filter_map(|pod| Some((ordinal(&pod.metadata)?, view(pod)?)))
                .collect();
            members.sort_by_key(|(ordinal, _)| *ordinal);
            // The lowest-ordinal voting member that a quorum of its whitelist backs.
            let leader = members
                .iter()
                .find_map(|(_, (address, status, quorum, masters))| {
                    let backing = members
                        .iter()
                        .filter(|(_, (peer, peer_status, _, peer_masters))| {
                            *peer_status == ReplicaStatus::Voting
                                && masters.contains(peer)
                                && peer_masters.contains(address)
                        })
                        .count();
                    (*status == ReplicaStatus::Voting && backing >= *quorum).then_some(*address)
                });
            let me = all
                .iter()
                .find(|pod| pod.name_any() == target.name)
                .ok_or_else(|| unreachable("no such pod"))?;
            let (member, status, quorum, masters) =
                view(me).ok_or_else(|| unreachable("not started"))?;
            let end = if status == ReplicaStatus::Voting {
                100
            } else {
                0
            };
            let log_id = self.log_id(NAMESPACE).await;
            Ok(LogStatus {
                member,
                status,
                log_id: (status != ReplicaStatus::Empty).then_some(log_id),
                begin: 0,
                end,
                learned: end,
                quorum,
                masters,
                leader,
                elected: leader == Some(member),
                peer_tls: false,
            })
        }
    }
}

/// A spec with `replicas` masters.
pub fn spec(replicas: i32) -> MesosMasterClusterSpec {
    MesosMasterClusterSpec::with_replicas(replicas)
}

/// Env of pod, for assertions.
pub fn pod_env(pod: &Pod, name: &str) -> Option<String> {
    env(pod, name)
}

pub fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions: &Vec<PodCondition>| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}
