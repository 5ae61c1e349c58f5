//! The Kubernetes shell around [`crate::operator::recovery`] (issue #11):
//! while quorum is lost the planner is held and status says what survives; the
//! annotation `mesos.operator.dev/recover-from` starts a guarded recovery:
//!
//! - `Exporting`: the survivor's local export goes into the ConfigMap
//!   `<cluster>-recovery-export` (not the Preserve one, `<cluster>-registry-export`,
//!   which the planner's transfer bookkeeping deletes once it is done: the planner
//!   runs during `Importing` to create the members, and would drop the only copy);
//! - `Fencing`: every member's StatefulSet, pod and volume claim go (as a removal
//!   does), so no old replica ever runs again; the planner then creates the
//!   members from empty volumes (it sees none left) and they draw a new log;
//! - `Importing`: once a leader votes on a log that is not fenced, the export is
//!   imported through it; the record is marked `Done` and the annotation removed.
//!
//! Each phase is written to `status.recovery` before its action runs again; an
//! action repeated after a crash is harmless (the ConfigMap is applied again, the
//! deletions are idempotent, an import into a registry holding data answers 409).

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;

use super::{apply_object, day2_from, remove_member, status_input, Error};
use crate::master::export_document;
use crate::operator::api::recovery::{RecoveryPhase, RecoveryRecord, ANNOTATION_RECOVER_FROM};
use crate::operator::api::Ordinal;
use crate::operator::api::{condition_types, MesosMasterCluster, MesosMasterClusterStatus, Phase};
use crate::operator::kubernetes::context::Context;
use crate::operator::kubernetes::observe::{member_target, Observation};
use crate::operator::kubernetes::resources::{self, Names};
use crate::operator::master_client::{ImportOutcome, Redirect};
use crate::operator::planner::Step;
use crate::operator::recovery::{
    self, assess, import_step, parse_request, validate, Assessment, ImportStep, MemberObservation,
};
use crate::operator::status::{self, Day2, Decided, Hold};

/// What the hook decided.
pub(super) enum Held {
    /// Not held: the planner runs (`status::derive` still marks a recovery in progress).
    No,
    /// Held: write this status and come back.
    Status {
        status: Box<MesosMasterClusterStatus>,
        /// The request is done: remove the annotation after the status is written.
        drop_request: bool,
    },
}

fn export_name(names: &Names) -> String {
    format!("{}-recovery-export", names.cluster)
}

fn member_name(names: &Names, ordinal: Ordinal) -> String {
    names.statefulset(ordinal)
}

fn observations(names: &Names, observation: &Observation) -> Vec<(Ordinal, MemberObservation)> {
    let ordinals: std::collections::BTreeSet<Ordinal> = observation
        .statefulsets
        .keys()
        .chain(observation.pods.keys())
        .copied()
        .collect();
    ordinals
        .into_iter()
        .map(|ordinal| {
            let status = observation.statuses.get(&ordinal);
            (
                ordinal,
                MemberObservation::from_status(member_name(names, ordinal), status),
            )
        })
        .collect()
}

/// The status of a held reconcile: the usual view of members, with the phase and
/// reason of the quorum loss or the recovery.
fn held_status(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &Observation,
    phase: Phase,
    reason: String,
    quorum_lost: Option<String>,
    record: Option<RecoveryRecord>,
) -> MesosMasterClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let memory = previous.planner_memory.clone().unwrap_or_default();
    let day2 = Day2 {
        recovery: record,
        hold: Some(Hold {
            phase,
            reason: reason.clone(),
            quorum_lost,
        }),
        ..day2_from(&previous)
    };
    // Held: the planner took no step, so status waits on what holds it.
    status::derive(
        &status_input(cluster, names, observation, None, day2),
        Decided {
            step: &Step::Wait { reason },
            blocked: None,
        },
        memory,
        &previous,
        Time(k8s_openapi::jiff::Timestamp::now()),
    )
}

/// Seconds since the `QuorumLost=True` condition was set (0 when it is not).
fn lost_for_seconds(cluster: &MesosMasterCluster) -> u64 {
    let since = cluster.status.as_ref().and_then(|status| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == condition_types::QUORUM_LOST && c.status == "True")
            .map(|c| c.last_transition_time.0.as_second())
    });
    since.map_or(0, |since| {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        u64::try_from(now.saturating_sub(since)).unwrap_or(0)
    })
}

/// Called each reconcile after observing, before the planner.
pub(super) async fn hold(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &Observation,
    ctx: &Context,
) -> Result<Held, Error> {
    let members = observations(names, observation);
    let record = cluster.status.as_ref().and_then(|s| s.recovery.clone());
    if let Some(record) = record.filter(|r| r.phase != RecoveryPhase::Done) {
        return step(cluster, names, observation, ctx, record, &members).await;
    }
    let observed: Vec<MemberObservation> = members.iter().map(|(_, m)| m.clone()).collect();
    let assessment = assess(&observed, cluster.spec.target_quorum().max(1) as usize);
    let Assessment::QuorumLost(loss) = &assessment else {
        return Ok(Held::No);
    };
    let lost_for = lost_for_seconds(cluster);
    let threshold = cluster.spec.recovery.quorum_loss_seconds;
    let suggestion = loss.suggested_request();
    let how = format!(
        "kubectl mmc recover {} --log-id {} -n {}  (or annotate {ANNOTATION_RECOVER_FROM}={suggestion})",
        suggestion.member,
        recovery::log_id_hex(suggestion.log_id),
        names.namespace,
    );
    let mut message = loss.message(lost_for, threshold, &how);
    if let Some(text) = cluster.annotations().get(ANNOTATION_RECOVER_FROM) {
        let checked = parse_request(text).and_then(|request| {
            validate(&request, &assessment, lost_for, threshold).map(|loss| (request, loss))
        });
        match checked {
            Ok((request, loss)) => {
                let names_all: Vec<String> = members.iter().map(|(_, m)| m.name.clone()).collect();
                let earlier = cluster.status.as_ref().and_then(|s| s.recovery.clone());
                let record = RecoveryRecord::start(&request, &loss, &names_all, earlier.as_ref());
                let status = held_status(
                    cluster,
                    names,
                    observation,
                    Phase::Recovering,
                    record.summary(),
                    Some(message),
                    Some(record),
                );
                return Ok(Held::Status {
                    status: Box::new(status),
                    drop_request: false,
                });
            }
            Err(refused) => message = format!("{message}; request refused: {refused}"),
        }
    }
    let status = held_status(
        cluster,
        names,
        observation,
        Phase::QuorumLost,
        message.clone(),
        Some(message),
        cluster.status.as_ref().and_then(|s| s.recovery.clone()),
    );
    Ok(Held::Status {
        status: Box::new(status),
        drop_request: false,
    })
}

fn ordinal_of(names: &Names, member: &str) -> Option<Ordinal> {
    member
        .strip_prefix(&format!("{}-", names.cluster))
        .and_then(|ordinal| ordinal.parse().ok())
}

async fn step(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &Observation,
    ctx: &Context,
    record: RecoveryRecord,
    members: &[(Ordinal, MemberObservation)],
) -> Result<Held, Error> {
    let held = |reason: String, record: RecoveryRecord| Held::Status {
        status: Box::new(held_status(
            cluster,
            names,
            observation,
            Phase::Recovering,
            reason,
            None,
            Some(record),
        )),
        drop_request: false,
    };
    match record.phase {
        RecoveryPhase::Exporting => {
            let target = ordinal_of(names, &record.from_member)
                .and_then(|ordinal| member_target(names, observation, ordinal, cluster.spec.port));
            let Some(target) = target else {
                let reason = format!(
                    "{}: {} has no pod to export from",
                    record.summary(),
                    record.from_member
                );
                return Ok(held(reason, record));
            };
            let document = match ctx.masters.export_local_registry(target).await {
                Ok(export) => export.document,
                Err(error) => return Ok(held(format!("{}: {error}", record.summary()), record)),
            };
            // Fully verified before it is stored: the fencing that follows wipes
            // every other copy.
            let (log_id, position) = match export_document::parse(&document) {
                Ok(parsed) => (parsed.log_id, parsed.position),
                Err(why) => {
                    return Ok(held(
                        format!("{}: {why}; nothing was wiped", record.summary()),
                        record,
                    ))
                }
            };
            if recovery::log_id_hex(log_id) != record.old_log_id {
                let reason = format!(
                    "{}: {} now exports log {}: nothing was wiped",
                    record.summary(),
                    record.from_member,
                    recovery::log_id_hex(log_id)
                );
                return Ok(held(reason, record));
            }
            let learned_end = ordinal_of(names, &record.from_member)
                .and_then(|ordinal| observation.statuses.get(&ordinal))
                .map_or(record.survivor_learned_end, |status| status.learned);
            if !record.export_complete(position, learned_end) {
                let reason = format!(
                    "{}: its registry has applied up to position {position} of {learned_end} learned; waiting",
                    record.summary()
                );
                return Ok(held(reason, record));
            }
            // Durable in the API before the record says Fencing.
            let mut config_map: ConfigMap =
                resources::registry_export_config_map(cluster, names, document, None)?;
            config_map.metadata.name = Some(export_name(names));
            apply_object(&ctx.client, &names.namespace, &config_map).await?;
            let next = record.exported(position);
            Ok(held(next.summary(), next))
        }
        RecoveryPhase::Fencing => {
            for (ordinal, _) in members {
                remove_member(names, *ordinal, ctx).await?;
            }
            let next = record.fenced();
            Ok(held(next.summary(), next))
        }
        RecoveryPhase::Importing => {
            let observed: Vec<MemberObservation> = members.iter().map(|(_, m)| m.clone()).collect();
            let leader = observation
                .observed
                .leader
                .map(|leader| member_name(names, leader));
            match import_step(&record, &observed, leader.as_deref()) {
                ImportStep::Refence { member } => {
                    if let Some(ordinal) = ordinal_of(names, &member) {
                        remove_member(names, ordinal, ctx).await?;
                    }
                    Ok(held(
                        format!(
                            "{}; {member} came back on a fenced log: removed again",
                            record.summary()
                        ),
                        record,
                    ))
                }
                // The planner creates the members meanwhile (`status::derive` says Recovering).
                ImportStep::Wait { .. } => Ok(Held::No),
                ImportStep::Import { leader, log_id } => {
                    let target = ordinal_of(names, &leader).and_then(|ordinal| {
                        member_target(names, observation, ordinal, cluster.spec.port)
                    });
                    let config_maps: Api<ConfigMap> =
                        Api::namespaced(ctx.client.clone(), &names.namespace);
                    let document = config_maps
                        .get_opt(&export_name(names))
                        .await?
                        .and_then(|cm| cm.binary_data)
                        .and_then(|data| {
                            data.get(resources::REGISTRY_EXPORT_KEY)
                                .map(|b| b.0.clone())
                        });
                    let (Some(target), Some(document)) = (target, document) else {
                        return Ok(held(format!("{}: the leader has no pod address or the export ConfigMap {} is missing", record.summary(), export_name(names)), record));
                    };
                    match ctx
                        .masters
                        .import_registry(target, document, Redirect::Report)
                        .await
                    {
                        Ok(ImportOutcome::Imported | ImportOutcome::AlreadyHeldData) => {
                            let done = record.imported(log_id);
                            let status = held_status(
                                cluster,
                                names,
                                observation,
                                Phase::Running,
                                done.summary(),
                                None,
                                Some(done),
                            );
                            Ok(Held::Status {
                                status: Box::new(status),
                                drop_request: true,
                            })
                        }
                        Err(error) => Ok(held(format!("{}: {error}", record.summary()), record)),
                    }
                }
            }
        }
        RecoveryPhase::Done => Ok(Held::No),
    }
}

/// Removes the annotation once its recovery is done.
pub(super) async fn drop_request(
    api: &Api<MesosMasterCluster>,
    cluster: &MesosMasterCluster,
) -> Result<(), Error> {
    let patch =
        serde_json::json!({ "metadata": { "annotations": { ANNOTATION_RECOVER_FROM: null } } });
    api.patch(
        &cluster.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
