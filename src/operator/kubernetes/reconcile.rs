//! The reconcile loop: observe → plan → apply ONE step → record.
//!
//! Level-triggered and idempotent. Every reconcile starts from what it observes
//! (pods, volumes, StatefulSets, Services, each master's `/log/status`) and from
//! what the cluster object itself remembers (`status.plannerMemory`, written
//! *before* the step it guards). Nothing is kept in the process: an operator that
//! crashes between any two API calls resumes from the next observation.
//!
//! Applying a step is a few idempotent API calls (server-side apply of the member's
//! StatefulSet, deletion of its pod or volume); applying it again after a crash
//! half-way is harmless. Every new step becomes an Event on the object and a
//! numbered line in `status.transition`; a step that waits says which member and
//! what for in `status.reason` and `status.transition.waitingFor`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::master::export_document;
use crate::operator::api::{
    condition_types, MesosMasterCluster, MesosMasterClusterStatus, VolumeReclaim,
};
use crate::operator::api::{Ordinal, PlannerMemory, RegistryTransfer};
use crate::operator::api::{ANNOTATION_IMPORT_SKIPPED, LABEL_LEADER};
use crate::operator::kubernetes::context::{publish, Context};
use crate::operator::kubernetes::error::Error;
use crate::operator::kubernetes::observe::{member_target, observe, pod_config, Observation};
use crate::operator::kubernetes::resources::{
    self, config_from_annotations, member_address, Names, ResourceError, FIELD_MANAGER,
    REGISTRY_EXPORT_KEY, REGISTRY_EXPORT_MAX_BYTES, TOKEN_BYTES,
};
use crate::operator::master_client::{ImportOutcome, MasterCallError, Redirect};
use crate::operator::planner::{self, MemberConfig, RegistryFate, Step};
use crate::operator::status::{
    self, action_name, Day2, Decided, RegistryExport, StatusInput, Storage,
};

/// The finalizer that lets the operator clean up (volumes per
/// `spec.storage.reclaim`) before the cluster object goes.
mod recovery;

pub const FINALIZER: &str = "mesos.operator.dev/cleanup";

/// While a transition runs (or a step waits on masters), look again this soon:
/// master statuses change without any Kubernetes watch event.
pub const REQUEUE_ACTIVE: Duration = Duration::from_secs(3);
/// A settled cluster is still re-observed now and then (a master may fall behind
/// or lose its leader without any object changing).
pub const REQUEUE_IDLE: Duration = Duration::from_secs(60);
/// A write that lost a race (HTTP 409) is retried almost at once, from a fresh read.
pub const REQUEUE_CONFLICT: Duration = Duration::from_secs(1);
/// Any other error is retried after this back-off.
pub const REQUEUE_ERROR: Duration = Duration::from_secs(15);

/// Reconciles one cluster: through the finalizer, `apply` or `cleanup`.
pub async fn reconcile(
    cluster: Arc<MesosMasterCluster>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let namespace = cluster
        .namespace()
        .ok_or(ResourceError::MissingMetadata("namespace"))?;
    let api: Api<MesosMasterCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, cluster, |event| async {
        match event {
            FinalizerEvent::Apply(cluster) => apply(cluster, ctx.clone()).await,
            FinalizerEvent::Cleanup(cluster) => cleanup(cluster, ctx.clone()).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

/// Conflicts retry at once; other errors back off. The error is counted and logged
/// here, once.
pub fn error_policy(cluster: Arc<MesosMasterCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.metric_label());
    tracing::warn!(cluster = %cluster.name_any(), %error, "reconcile failed");
    if error.is_conflict() {
        Action::requeue(REQUEUE_CONFLICT)
    } else {
        Action::requeue(REQUEUE_ERROR)
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side apply of an object the operator owns.
async fn apply_object<K>(client: &kube::Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(ResourceError::MissingMetadata("name"))?;
    Ok(api
        .patch(&name, &apply_params(), &Patch::Apply(object))
        .await?)
}

/// Deletes an object; one already gone is fine.
async fn delete_object<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    policy: Option<PropagationPolicy>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        propagation_policy: policy,
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The outcome of applying a step.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Applied {
    /// The step's API calls were made (or there was nothing to make).
    Done,
    /// The step waits on Kubernetes (a member Service without its cluster IP yet):
    /// reported as a wait, applied by a later reconcile.
    Waiting(String),
    /// The step cannot be applied at all as things are; why, in words.
    Blocked(String),
}

async fn apply(cluster: Arc<MesosMasterCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let names = Names::of(&cluster)?;
    let api: Api<MesosMasterCluster> = Api::namespaced(ctx.client.clone(), &names.namespace);
    ensure_shared_objects(&cluster, &names, &ctx).await?;

    let memory = cluster
        .status
        .as_ref()
        .and_then(|status| status.planner_memory.clone())
        .unwrap_or_default();
    let mut observation = observe(
        &ctx.client,
        &names,
        cluster.spec.port,
        memory.clone(),
        ctx.masters.as_ref(),
    )
    .await?;
    ensure_member_services(&cluster, &names, &mut observation, &ctx).await?;

    // Quorum lost, or a recovery under way: the planner is held (issue #11).
    if let recovery::Held::Status {
        status,
        drop_request,
    } = recovery::hold(&cluster, &names, &observation, &ctx).await?
    {
        let latest = replace_status(&api, &cluster, *status).await?;
        if drop_request {
            recovery::drop_request(&api, &latest).await?;
        }
        return Ok(Action::requeue(REQUEUE_ACTIVE));
    }

    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut export = config_maps.get_opt(&names.registry_export()).await?;

    let decision = planner::decide(&cluster.spec, &observation.observed);
    let step = decision.step.clone();
    tracing::info!(cluster = %names.cluster, namespace = %names.namespace, step = %step.describe(&names.cluster), "planned");

    // A wipe that relies on an export is refused before anything is remembered or
    // deleted when the export is not where the import will look for it.
    let refused = refuse_unbacked_wipe(&names, &step, &memory, export.as_ref());
    let mut latest = (*cluster).clone();
    let (applied, memory_after) = match refused {
        Some(why) => (Applied::Blocked(why), memory.clone()),
        None => {
            // Write-ahead: what the planner must remember (a member being fenced, a
            // wipe under way) is durable before the step it guards begins.
            if decision.memory != memory {
                let mut status = latest.status.clone().unwrap_or_default();
                status.planner_memory = Some(decision.memory.clone());
                latest = replace_status(&api, &latest, status).await?;
            }

            pin_templates(&cluster, &names, &observation, &step, &ctx).await?;

            let started = Instant::now();
            let applied =
                apply_step(&cluster, &names, &observation, &step, export.as_ref(), &ctx).await?;
            ctx.metrics
                .step_applied(action_name(&step), started.elapsed());
            // After success only: an export is remembered once it is durable in its
            // ConfigMap (apply_step wrote it), an import once the leader learned it.
            let memory_after = match &applied {
                Applied::Done => decision.memory.after_success(&step),
                Applied::Waiting(_) | Applied::Blocked(_) => decision.memory.clone(),
            };
            (applied, memory_after)
        }
    };
    if step == Step::Done && memory_after.registry == RegistryTransfer::None {
        export = finish_registry_transfer(&cluster, &names, &observation, export, &ctx).await?;
    } else if matches!(
        step,
        Step::ExportRegistry { .. } | Step::ImportRegistry { .. }
    ) {
        export = config_maps.get_opt(&names.registry_export()).await?;
    }
    let (step, blocked) = match applied {
        Applied::Done => (step, None),
        Applied::Waiting(reason) => (Step::Wait { reason }, None),
        Applied::Blocked(why) => (step, Some(why)),
    };
    let blocked = blocked.as_deref();

    label_leader(&names, &observation, &ctx).await?;
    let quorum_floor = observation
        .pods
        .values()
        .map(|pod| pod_config(pod).quorum)
        .max()
        .unwrap_or(cluster.spec.target_quorum() as u32)
        .max(1);
    apply_object(
        &ctx.client,
        &names.namespace,
        &resources::pod_disruption_budget(&cluster, &names, quorum_floor)?,
    )
    .await?;

    let previous = latest.status.clone().unwrap_or_default();
    let mut status = status::derive(
        &status_input(
            &latest,
            &names,
            &observation,
            export.as_ref(),
            day2_from(&previous),
        ),
        Decided {
            step: &step,
            blocked,
        },
        memory_after,
        &previous,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    publish_events(&cluster, &names, &previous, &status, &step, blocked, &ctx).await;
    // Issue #11: restart requests, scheduled backups, the restore at creation.
    let (latest, restarting) = crate::operator::kubernetes::restarts::honour(
        &api,
        latest,
        &names,
        &observation.pods,
        &step,
        &mut status,
        &ctx,
    )
    .await?;
    let restoring = crate::operator::kubernetes::jobs::reconcile_backup_and_restore(
        &cluster,
        &names,
        &observation,
        &step,
        &mut status,
        &ctx,
    )
    .await?;
    replace_status(&api, &latest, status).await?;

    Ok(match step {
        Step::Done if restarting || restoring => Action::requeue(REQUEUE_ACTIVE),
        Step::Done => Action::requeue(REQUEUE_IDLE),
        // A blocked step (an export too large to keep, say) is retried at the
        // error pace: each retry may seal the single master for a moment.
        Step::Failed { .. } => Action::requeue(REQUEUE_ERROR),
        _ if blocked.is_some() => Action::requeue(REQUEUE_ERROR),
        _ => Action::requeue(REQUEUE_ACTIVE),
    })
}

/// Writes the whole status with optimistic concurrency (`PUT .../status` with the
/// object's resourceVersion): the status is one document computed from one
/// observation, so a writer that raced us gets a conflict and re-observes, rather
/// than two views being merged field by field.
async fn replace_status(
    api: &Api<MesosMasterCluster>,
    cluster: &MesosMasterCluster,
    status: MesosMasterClusterStatus,
) -> Result<MesosMasterCluster, Error> {
    let mut updated = cluster.clone();
    updated.status = Some(status);
    updated.metadata.managed_fields = None;
    Ok(api
        .replace_status(&cluster.name_any(), &PostParams::default(), &updated)
        .await?)
}

/// The token Secret (created once), the headless, client and leader Services and
/// the NetworkPolicy.
async fn ensure_shared_objects(
    cluster: &MesosMasterCluster,
    names: &Names,
    ctx: &Context,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    if secrets.get_opt(&names.token_secret()).await?.is_none() {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|error| Error::Random(error.to_string()))?;
        let secret = resources::token_secret(cluster, names, resources::hex(&bytes))?;
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => tracing::info!(secret = %names.token_secret(), "ensemble token created"),
            // Another writer created it first: theirs stands, ours is dropped unread.
            Err(kube::Error::Api(response)) if response.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    for service in [
        resources::headless_service(cluster, names)?,
        resources::client_service(cluster, names)?,
        resources::leader_service(cluster, names)?,
    ] {
        apply_object(&ctx.client, &names.namespace, &service).await?;
    }
    apply_object(
        &ctx.client,
        &names.namespace,
        &resources::network_policy(cluster, names)?,
    )
    .await?;
    Ok(())
}

/// Member Services exist for every member that is asked for, exists, or is in a
/// whitelist in use (pod or template): a whitelisted address must stay the same
/// member's for as long as anyone may use it. Others are deleted.
async fn ensure_member_services(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &mut Observation,
    ctx: &Context,
) -> Result<(), Error> {
    let mut needed: BTreeSet<Ordinal> = (0..cluster.spec.replicas.max(0) as Ordinal).collect();
    needed.extend(observation.pods.keys());
    needed.extend(observation.claims.keys());
    needed.extend(observation.statefulsets.keys());
    for pod in observation.pods.values() {
        needed.extend(pod_config(pod).whitelist);
    }
    for statefulset in observation.statefulsets.values() {
        if let Some(config) = template_config(statefulset) {
            needed.extend(config.whitelist);
        }
    }
    let needed: BTreeSet<Ordinal> = needed
        .into_iter()
        .filter(|ordinal| *ordinal < crate::operator::api::MAX_REPLICAS as Ordinal)
        .collect();

    for ordinal in &needed {
        if !observation.member_services.contains(ordinal) {
            let service = apply_object(
                &ctx.client,
                &names.namespace,
                &resources::member_service(cluster, names, *ordinal)?,
            )
            .await?;
            observation.member_services.insert(*ordinal);
            if let Some(ip) = service
                .spec
                .and_then(|spec| spec.cluster_ip)
                .and_then(|ip| ip.parse().ok())
            {
                observation.service_ips.insert(*ordinal, ip);
            }
        }
        match resources::external_service(cluster, names, *ordinal)? {
            Some(service) => {
                apply_object(&ctx.client, &names.namespace, &service).await?;
            }
            None => {
                delete_object::<Service>(
                    &ctx.client,
                    &names.namespace,
                    &names.external_service(*ordinal),
                    None,
                )
                .await?
            }
        }
    }
    let unneeded: Vec<Ordinal> = observation
        .member_services
        .iter()
        .filter(|ordinal| !needed.contains(ordinal))
        .copied()
        .collect();
    for ordinal in unneeded {
        for name in [
            names.member_service(ordinal),
            names.external_service(ordinal),
        ] {
            delete_object::<Service>(&ctx.client, &names.namespace, &name, None).await?;
        }
        observation.member_services.remove(&ordinal);
        observation.service_ips.remove(&ordinal);
    }
    Ok(())
}

fn template_config(statefulset: &StatefulSet) -> Option<MemberConfig> {
    statefulset
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()
        .and_then(config_from_annotations)
}

/// A StatefulSet's `volumeClaimTemplates` is immutable: the API server refuses any
/// update that changes it, so applying a changed `spec.storage` to an existing
/// member would fail on every reconcile, forever. An existing member keeps the
/// template it was created with (and its volume); the spec's storage applies to
/// members created from now on: new members, and members replaced or wiped (their
/// StatefulSet is deleted and created again). `status.conditions` says which members
/// still run with other storage ([`storage_drift`]).
fn keep_claim_templates(mut desired: StatefulSet, existing: Option<&StatefulSet>) -> StatefulSet {
    let existing_templates = existing
        .and_then(|statefulset| statefulset.spec.as_ref())
        .map(|spec| spec.volume_claim_templates.clone());
    if let (Some(templates), Some(spec)) = (existing_templates, desired.spec.as_mut()) {
        spec.volume_claim_templates = templates;
    }
    desired
}

/// Size and class a claim template asks for, as `spec.storage` writes them.
fn template_storage(statefulset: &StatefulSet) -> Option<(String, Option<String>)> {
    let template = statefulset
        .spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .first()?;
    let spec = template.spec.as_ref()?;
    let size = spec
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?
        .0
        .clone();
    Some((size, spec.storage_class_name.clone()))
}

/// Members whose StatefulSet asks for other storage than `spec.storage` (created
/// before it changed), each with what it has.
fn storage_drift(
    cluster: &MesosMasterCluster,
    observation: &Observation,
) -> Vec<(Ordinal, String)> {
    let wanted = (
        cluster.spec.storage.size.0.clone(),
        cluster.spec.storage.storage_class_name.clone(),
    );
    observation
        .statefulsets
        .iter()
        .filter_map(|(ordinal, statefulset)| {
            let has = template_storage(statefulset)?;
            (has != wanted).then(|| {
                let class = has.1.as_deref().unwrap_or("the default class");
                (*ordinal, format!("{} of {class}", has.0))
            })
        })
        .collect()
}

/// The member a step acts on.
fn step_member(step: &Step) -> Option<Ordinal> {
    match step {
        Step::RestartMember { member, .. }
        | Step::CreateMember { member, .. }
        | Step::RemoveMember { member, .. }
        | Step::WipeMember { member, .. } => Some(*member),
        _ => None,
    }
}

/// Every StatefulSet other than the step's member carries its pod's configuration:
/// a pod that dies and is recreated comes back as it was, never with a
/// configuration the planner has not chosen for it (after a crash between writing a
/// template and deleting the pod, the template is put back).
async fn pin_templates(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &Observation,
    step: &Step,
    ctx: &Context,
) -> Result<(), Error> {
    for (ordinal, statefulset) in &observation.statefulsets {
        if Some(*ordinal) == step_member(step) {
            continue;
        }
        let Some(pod) = observation.pods.get(ordinal) else {
            continue;
        };
        let config = pod_config(pod);
        if config.ensemble_size().is_none() || template_config(statefulset) == Some(config.clone())
        {
            continue;
        }
        match resources::member_statefulset(
            cluster,
            names,
            *ordinal,
            &config,
            &observation.service_ips,
        ) {
            Ok(desired) => {
                let statefulset = keep_claim_templates(desired, Some(statefulset));
                apply_object(&ctx.client, &names.namespace, &statefulset).await?;
            }
            Err(error) => tracing::warn!(%error, "cannot pin the template yet"),
        }
    }
    Ok(())
}

/// Stops member `ordinal` for good: its StatefulSet first (nothing recreates the
/// pod), then its pod, then its volume. Kubernetes keeps the volume until the pod
/// is gone (pvc-protection), so the volume is never reused by a restarted pod.
async fn remove_member(names: &Names, ordinal: Ordinal, ctx: &Context) -> Result<(), Error> {
    delete_object::<StatefulSet>(
        &ctx.client,
        &names.namespace,
        &names.statefulset(ordinal),
        Some(PropagationPolicy::Background),
    )
    .await?;
    delete_object::<Pod>(&ctx.client, &names.namespace, &names.pod(ordinal), None).await?;
    delete_object::<PersistentVolumeClaim>(
        &ctx.client,
        &names.namespace,
        &names.volume_claim(ordinal),
        None,
    )
    .await?;
    Ok(())
}

async fn apply_step(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &Observation,
    step: &Step,
    export: Option<&ConfigMap>,
    ctx: &Context,
) -> Result<Applied, Error> {
    let statefulset = |ordinal: Ordinal, config: &MemberConfig| {
        resources::member_statefulset(cluster, names, ordinal, config, &observation.service_ips)
            .map(|desired| keep_claim_templates(desired, observation.statefulsets.get(&ordinal)))
    };
    match step {
        Step::CreateMember { member, config } => match statefulset(*member, config) {
            Ok(statefulset) => {
                apply_object(&ctx.client, &names.namespace, &statefulset).await?;
                Ok(Applied::Done)
            }
            Err(error @ ResourceError::NoAddress { .. }) => Ok(Applied::Waiting(error.to_string())),
            Err(error) => Err(error.into()),
        },
        Step::RestartMember { member, config } => {
            let statefulset = match statefulset(*member, config) {
                Ok(statefulset) => statefulset,
                Err(error @ ResourceError::NoAddress { .. }) => {
                    return Ok(Applied::Waiting(error.to_string()))
                }
                Err(error) => return Err(error.into()),
            };
            // The template first, then the pod: the StatefulSet controller recreates
            // the pod from the new template (OnDelete never does it on its own).
            apply_object(&ctx.client, &names.namespace, &statefulset).await?;
            let runs_old = observation.pods.get(member).is_some_and(|pod| {
                pod.metadata.deletion_timestamp.is_none() && pod_config(pod) != *config
            });
            if runs_old {
                delete_object::<Pod>(&ctx.client, &names.namespace, &names.pod(*member), None)
                    .await?;
            }
            Ok(Applied::Done)
        }
        Step::RemoveMember { member, .. } => {
            remove_member(names, *member, ctx).await?;
            Ok(Applied::Done)
        }
        // On Kubernetes the whole work_dir is the member's volume: wiping
        // replicated_log is removing the member with its volume; the planner then
        // starts the new ensemble from empty logs (it sees no member left).
        Step::WipeMember { member, .. } => {
            remove_member(names, *member, ctx).await?;
            Ok(Applied::Done)
        }
        Step::ExportRegistry { from } => {
            export_registry(cluster, names, observation, *from, ctx).await
        }
        Step::ImportRegistry { into } => {
            import_registry(cluster, names, observation, *into, export, ctx).await
        }
        Step::Wait { .. } | Step::Done | Step::Failed { .. } => Ok(Applied::Done),
    }
}

/// The export document a ConfigMap holds, if it holds one.
fn export_document(export: &ConfigMap) -> Option<&[u8]> {
    export
        .binary_data
        .as_ref()?
        .get(REGISTRY_EXPORT_KEY)
        .map(|bytes| bytes.0.as_slice())
}

fn import_skipped(export: &ConfigMap) -> Option<&str> {
    export
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_IMPORT_SKIPPED)
        .map(String::as_str)
}

/// A `Preserve` wipe about to begin (the export remembered, the wipe not yet) whose
/// export is not in its ConfigMap: refused, so the only copy of the registry is
/// never the log being wiped. Once the wipe began (`Wiped`) there is nothing left to
/// protect; the import reports the missing export.
fn refuse_unbacked_wipe(
    names: &Names,
    step: &Step,
    memory: &PlannerMemory,
    export: Option<&ConfigMap>,
) -> Option<String> {
    let preserving = matches!(
        step,
        Step::WipeMember {
            registry: RegistryFate::Preserved,
            ..
        }
    );
    if !preserving || memory.registry != RegistryTransfer::Exported {
        return None;
    }
    match export.and_then(export_document) {
        Some(_) => None,
        None => Some(format!(
            "the registry export in ConfigMap {} is missing, so the single master is not wiped; delete status.plannerMemory to export again, or set spec.singleMasterExit: Wipe to leave single-master mode without the registry",
            names.registry_export()
        )),
    }
}

/// A failed master call: a member that does not lead, or does not answer, is a wait
/// (the planner re-plans from the next observation); a refusal, or a master
/// without the endpoint, is a blocked step.
fn call_failed(error: MasterCallError) -> Applied {
    match error {
        MasterCallError::Refused { .. } | MasterCallError::EndpointMissing { .. } => {
            Applied::Blocked(error.to_string())
        }
        _ => Applied::Waiting(error.to_string()),
    }
}

/// `ExportRegistry`: seal the single master's registry and store the export in
/// its ConfigMap, durably, before the step counts as done (the caller then
/// remembers `Exported`, which lets the planner wipe). A crash anywhere before that
/// leaves `Exported` unrecorded: the next reconcile seals again (the master answers
/// the same document while sealed) and rewrites the ConfigMap.
async fn export_registry(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &Observation,
    from: Ordinal,
    ctx: &Context,
) -> Result<Applied, Error> {
    let Some(target) = member_target(names, observation, from, cluster.spec.port) else {
        return Ok(Applied::Waiting(format!(
            "{} has no pod IP to seal its registry through",
            names.pod(from)
        )));
    };
    let document = match ctx
        .masters
        .seal_registry(target.clone(), Redirect::Report)
        .await
    {
        Ok(document) => document,
        Err(error) => return Ok(call_failed(error)),
    };
    let unusable = if document.len() > REGISTRY_EXPORT_MAX_BYTES {
        Some(format!(
            "the registry export of {} is {} bytes, more than the {REGISTRY_EXPORT_MAX_BYTES} bytes a ConfigMap can hold (Kubernetes' limit is 1 MiB); nothing was wiped and {} keeps running single-master; set spec.singleMasterExit: Wipe to leave single-master mode without the registry, or set spec.replicas back to 1",
            names.statefulset(from),
            document.len(),
            names.statefulset(from),
        ))
    } else {
        // Fully verified before it is stored: the wipe that follows destroys the
        // only other copy, so a document the import would refuse (truncated,
        // altered, of another format) must stop the transfer here, while the
        // single master still holds its registry, not after the wipe.
        export_document::parse(&document)
            .err()
            .map(|error| format!("{}: {error}; nothing was wiped", target.name))
    };
    if let Some(why) = unusable {
        // The export cannot be kept, so the wipe will not happen: the single master
        // takes writes again rather than sitting sealed behind a blocked step.
        if let Err(error) = ctx.masters.unseal_registry(target, Redirect::Report).await {
            tracing::warn!(%error, "could not unseal after an unusable export");
            return Ok(Applied::Blocked(format!(
                "{why}; unsealing failed: {error}"
            )));
        }
        return Ok(Applied::Blocked(why));
    }
    apply_object(
        &ctx.client,
        &names.namespace,
        &resources::registry_export_config_map(cluster, names, document, None)?,
    )
    .await?;
    Ok(Applied::Done)
}

/// `ImportRegistry`: replay the stored export through the leader. The ConfigMap is
/// kept until the planner is done (see [`finish_registry_transfer`]): until
/// `Imported` is durable in the status it is the only copy of the registry.
async fn import_registry(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &Observation,
    into: Ordinal,
    export: Option<&ConfigMap>,
    ctx: &Context,
) -> Result<Applied, Error> {
    let Some(document) = export.and_then(export_document) else {
        return Ok(Applied::Blocked(format!(
            "the registry export in ConfigMap {} is missing: the registry cannot be restored; set spec.singleMasterExit: Wipe and delete status.plannerMemory to carry on with an empty registry",
            names.registry_export()
        )));
    };
    let Some(target) = member_target(names, observation, into, cluster.spec.port) else {
        return Ok(Applied::Waiting(format!(
            "{} has no pod IP to import the registry through",
            names.pod(into)
        )));
    };
    let pod = target.name.clone();
    match ctx
        .masters
        .import_registry(target, document.to_vec(), Redirect::Report)
        .await
    {
        Ok(ImportOutcome::Imported) => Ok(Applied::Done),
        Ok(ImportOutcome::AlreadyHeldData) => {
            // The master left its registry as it was; the export stays for the user,
            // marked, and the transfer counts as done (there is nothing to retry).
            let why = format!(
                "{pod} answered 409: the new registry already held data and was left as it is; the export was not imported and stays in ConfigMap {} (delete it once it is no longer needed)",
                names.registry_export()
            );
            apply_object(
                &ctx.client,
                &names.namespace,
                &resources::registry_export_config_map(
                    cluster,
                    names,
                    document.to_vec(),
                    Some(why.clone()),
                )?,
            )
            .await?;
            publish(
                cluster,
                ctx,
                Event {
                    type_: EventType::Warning,
                    reason: "RegistryImportSkipped".to_string(),
                    note: Some(why),
                    action: "ImportRegistry".to_string(),
                    secondary: None,
                },
            )
            .await;
            Ok(Applied::Done)
        }
        Err(error) => Ok(call_failed(error)),
    }
}

/// The planner is done and remembers no transfer: an export left behind was either
/// imported (the leader was never sealed: unsealing is a no-op) or abandoned (the
/// spec went back to one master after the seal: the single master is sealed and
/// must take writes again). Unseal through the leader, then delete the ConfigMap,
/// in that order, so a crash in between unseals again. An export whose import was
/// skipped (409) is kept for the user. Returns the export still there.
async fn finish_registry_transfer(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &Observation,
    export: Option<ConfigMap>,
    ctx: &Context,
) -> Result<Option<ConfigMap>, Error> {
    let Some(config_map) = export else {
        return Ok(None);
    };
    if import_skipped(&config_map).is_some() {
        return Ok(Some(config_map));
    }
    let target = observation
        .observed
        .leader
        .and_then(|leader| member_target(names, observation, leader, cluster.spec.port));
    let Some(target) = target else {
        // No leader to unseal through yet: kept, tried again next reconcile.
        return Ok(Some(config_map));
    };
    if let Err(error) = ctx.masters.unseal_registry(target, Redirect::Report).await {
        tracing::warn!(%error, "could not unseal the registry; the export is kept");
        return Ok(Some(config_map));
    }
    delete_object::<ConfigMap>(
        &ctx.client,
        &names.namespace,
        &names.registry_export(),
        None,
    )
    .await?;
    publish(
        cluster,
        ctx,
        Event {
            type_: EventType::Normal,
            reason: "RegistryExportReleased".to_string(),
            note: Some(format!(
                "registry writes accepted; ConfigMap {} deleted",
                names.registry_export()
            )),
            action: "Done".to_string(),
            secondary: None,
        },
    )
    .await;
    Ok(None)
}

/// The leader pod carries `mesos.operator.dev/leader=true` (the leader Service
/// selects it); no other pod does.
async fn label_leader(
    names: &Names,
    observation: &Observation,
    ctx: &Context,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    for (ordinal, pod) in &observation.pods {
        let is_leader = observation.observed.leader == Some(*ordinal);
        let labelled = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_LEADER))
            .is_some_and(|value| value == "true");
        if is_leader == labelled || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let value = if is_leader {
            serde_json::Value::from("true")
        } else {
            serde_json::Value::Null
        };
        let patch = serde_json::json!({ "metadata": { "labels": { LABEL_LEADER: value } } });
        match pods
            .patch(
                &names.pod(*ordinal),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(response)) if response.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// The Kubernetes shell's view of one reconcile, for [`status::derive`]. Pure.
pub(crate) fn status_input<'a>(
    cluster: &'a MesosMasterCluster,
    names: &'a Names,
    observation: &'a Observation,
    export: Option<&ConfigMap>,
    day2: Day2,
) -> StatusInput<'a> {
    StatusInput {
        cluster_name: &names.cluster,
        spec: &cluster.spec,
        generation: cluster.metadata.generation,
        observed: &observation.observed,
        addresses: observation
            .observed
            .members
            .iter()
            .filter_map(|member| {
                let address =
                    member_address(cluster, names, member.ordinal, &observation.service_ips)
                        .ok()?;
                Some((member.ordinal, address))
            })
            .collect(),
        storage: Storage::Templates {
            drift: storage_drift(cluster, observation),
        },
        registry_export: export.map(|export| RegistryExport {
            size_bytes: export_document(export).map_or(0, <[u8]>::len),
            kept_in: format!(
                "ConfigMap {}",
                export.metadata.name.clone().unwrap_or_default()
            ),
            import_skipped: import_skipped(export).map(str::to_string),
        }),
        spec_rejected: None,
        day2,
    }
}

/// The day-2 parts a reconcile starts from: as the day-2 hooks last wrote them
/// (`day2::jobs`, `day2::restarts` update them after the derivation).
fn day2_from(previous: &MesosMasterClusterStatus) -> Day2 {
    Day2 {
        backup: previous.backup.clone(),
        restore: previous.restore.clone(),
        recovery: previous.recovery.clone(),
        hold: None,
        member_restart: None,
    }
}

/// One Event per new transition line, per blocked or failed step, per completed
/// transition. Events are best-effort: a failure to publish is logged, never
/// stops the step.
async fn publish_events(
    cluster: &MesosMasterCluster,
    names: &Names,
    previous: &MesosMasterClusterStatus,
    status: &MesosMasterClusterStatus,
    step: &Step,
    blocked: Option<&str>,
    ctx: &Context,
) {
    let lines = |status: &MesosMasterClusterStatus| {
        status
            .transition
            .as_ref()
            .map(|transition| (transition.from, transition.to, transition.steps.len()))
    };
    let mut events = Vec::new();
    let new_line = lines(status) != lines(previous);
    if step.is_action() && new_line {
        if let Some(line) = status
            .transition
            .as_ref()
            .and_then(|transition| transition.steps.last())
        {
            events.push(Event {
                type_: EventType::Normal,
                reason: action_name(step).to_string(),
                note: Some(format!("step {}: {}", line.number, line.description)),
                action: action_name(step).to_string(),
                secondary: None,
            });
        }
    }
    if let Some(why) = blocked {
        events.push(Event {
            type_: EventType::Warning,
            reason: "StepBlocked".to_string(),
            note: Some(format!("{}: {why}", step.describe(&names.cluster))),
            action: action_name(step).to_string(),
            secondary: None,
        });
    }
    if let Step::Failed { reason } = step {
        events.push(Event {
            type_: EventType::Warning,
            reason: "PlanFailed".to_string(),
            note: Some(reason.clone()),
            action: "Plan".to_string(),
            secondary: None,
        });
    }
    let was_active = previous
        .transition
        .as_ref()
        .is_some_and(|transition| transition.current_step.is_some());
    if *step == Step::Done && was_active {
        events.push(Event {
            type_: EventType::Normal,
            reason: "TransitionComplete".to_string(),
            note: Some(format!(
                "{} masters running with --quorum={}",
                cluster.spec.replicas,
                cluster.spec.target_quorum()
            )),
            action: "Done".to_string(),
            secondary: None,
        });
    }
    let storage = |status: &MesosMasterClusterStatus| {
        status
            .conditions
            .iter()
            .find(|condition| condition.type_ == condition_types::STORAGE_CURRENT)
            .map(|condition| (condition.status.clone(), condition.message.clone()))
    };
    if let Some((held, message)) = storage(status) {
        let before = storage(previous);
        if held == "False" && before.as_ref() != Some(&(held.clone(), message.clone())) {
            events.push(Event {
                type_: EventType::Warning,
                reason: "StorageKept".to_string(),
                note: Some(message),
                action: "ApplyStatefulSet".to_string(),
                secondary: None,
            });
        }
    }
    let reference = cluster.object_ref(&());
    for event in events {
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason = %event.reason, "could not publish an event");
        }
    }
}

/// The cluster object is being deleted: owned objects go with it (owner
/// references); volumes, which the StatefulSets' claim templates create without
/// owners, are deleted only if `spec.storage.reclaim` is `Delete`.
async fn cleanup(cluster: Arc<MesosMasterCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let names = Names::of(&cluster)?;
    let note = match cluster.spec.storage.reclaim {
        VolumeReclaim::Retain => "volumes retained (spec.storage.reclaim: Retain)".to_string(),
        VolumeReclaim::Delete => {
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &names.namespace);
            let listed = claims
                .list(&ListParams::default().labels(&names.selector()))
                .await?;
            let mut deleted = Vec::new();
            for claim in listed.items {
                let name = claim.name_any();
                delete_object::<PersistentVolumeClaim>(&ctx.client, &names.namespace, &name, None)
                    .await?;
                deleted.push(name);
            }
            format!(
                "volumes deleted (spec.storage.reclaim: Delete): {}",
                deleted.join(", ")
            )
        }
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Cleanup".to_string(),
        note: Some(note),
        action: "Delete".to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "could not publish the cleanup event");
    }
    Ok(Action::await_change())
}

/// Watches `MesosMasterCluster`s (in `namespace`, or everywhere) and reconciles
/// them until a shutdown signal. Fails at once, with the API's answer, when the
/// CRD is not installed or the operator may not list clusters.
pub async fn run_controller(
    ctx: Arc<Context>,
    namespace: Option<String>,
    readiness: crate::operator::kubernetes::serve::Readiness,
) -> Result<(), Error> {
    let (clusters, statefulsets) = match &namespace {
        Some(namespace) => (
            Api::<MesosMasterCluster>::namespaced(ctx.client.clone(), namespace),
            Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace),
        ),
        None => (
            Api::<MesosMasterCluster>::all(ctx.client.clone()),
            Api::<StatefulSet>::all(ctx.client.clone()),
        ),
    };
    clusters.list(&ListParams::default().limit(1)).await?;
    readiness.set_ready();
    let owned = watcher::Config::default().labels(&format!(
        "{}={FIELD_MANAGER}",
        crate::operator::api::LABEL_MANAGED_BY
    ));
    Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(statefulsets, owned)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile error"),
            }
        })
        .await;
    Ok(())
}

/// The ordinals whose pods run each configuration, for tests and diagnostics.
pub fn configs_by_member(observation: &Observation) -> BTreeMap<Ordinal, MemberConfig> {
    observation
        .pods
        .iter()
        .map(|(ordinal, pod)| (*ordinal, pod_config(pod)))
        .collect()
}
