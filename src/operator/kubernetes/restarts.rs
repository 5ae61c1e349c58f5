//! Honouring `kubectl mmc restart <member>` in the reconcile loop (issue #11).
//!
//! The request is the annotation [`ANNOTATION_RESTART_MEMBER`] on the cluster
//! object. Each reconcile decides from what it observes now (the status it is
//! about to write, computed from this observation, not the requester's view):
//!
//! 1. no transition may run (the planner says Done) and [`check_restart`] must
//!    pass: a quorum of ready masters without the member. Otherwise the request
//!    stays, the `MemberRestart` condition says why, and it is checked again on the
//!    next reconcile.
//! 2. the UID of the member's pod is recorded in [`ANNOTATION_RESTART_POD_UID`]
//!    *before* the pod is deleted (write-ahead: an operator that crashes after the
//!    delete never deletes the new pod again); the StatefulSet recreates it.
//! 3. once the member's pod is another pod (another UID) and ready (Voting, caught
//!    up), both annotations are removed: the restart is done.
//!
//! [`decide`] is the pure part; [`honour`] applies its answer.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::ResourceExt;

use crate::operator::api::condition_types::MEMBER_RESTART;
use crate::operator::api::{
    MesosMasterCluster, MesosMasterClusterStatus, Ordinal, ANNOTATION_RESTART_MEMBER,
    ANNOTATION_RESTART_POD_UID,
};
use crate::operator::kubernetes::context::{publish, Context};
use crate::operator::kubernetes::error::Error;
use crate::operator::kubernetes::resources::Names;
use crate::operator::planner::Step;
use crate::operator::restart::{check_restart, RestartRefused};
use crate::operator::status::condition;

/// What the reconcile does about a restart request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartAction {
    /// No request, nothing left over.
    Idle,
    /// A record without a request (the request was withdrawn): drop the record.
    Forget,
    /// Not now: the reason, for the condition. The request stays.
    Refuse(String),
    /// Record `uid` (the pod's, or empty when the member has no pod), then delete
    /// `pod` if there is one.
    Restart {
        member: String,
        pod: Option<String>,
        uid: String,
    },
    /// The restart is under way; what it waits for.
    Wait(String),
    /// The member is back, voting: remove the request and the record.
    Finish(String),
}

/// The member's pod: name and UID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    pub name: String,
    pub uid: String,
}

fn ordinal_of(names: &Names, member: &str) -> Option<Ordinal> {
    let ordinal: Ordinal = member
        .strip_prefix(&names.cluster)?
        .strip_prefix('-')?
        .parse()
        .ok()?;
    (names.statefulset(ordinal) == member).then_some(ordinal)
}

/// Pure: the request, the record, the status computed from this observation, the
/// planner's step and the members' pods.
pub fn decide(
    names: &Names,
    request: Option<&str>,
    deleted_uid: Option<&str>,
    status: &MesosMasterClusterStatus,
    step: &Step,
    pods: &BTreeMap<Ordinal, PodIdentity>,
) -> RestartAction {
    let Some(member) = request else {
        return match deleted_uid {
            Some(_) => RestartAction::Forget,
            None => RestartAction::Idle,
        };
    };
    let ordinal = ordinal_of(names, member);
    if let Some(deleted) = deleted_uid {
        let back = ordinal
            .and_then(|ordinal| pods.get(&ordinal))
            .is_some_and(|pod| pod.uid != deleted)
            && status
                .members
                .iter()
                .any(|candidate| candidate.name == member && candidate.ready);
        return if back {
            RestartAction::Finish(format!("restarted {member}: it votes again"))
        } else {
            RestartAction::Wait(format!("restarting {member}: waiting for it to vote"))
        };
    }
    // The quorum guard first: while a member is down the planner waits too, and
    // "it would lose quorum" is the reason a user can act on.
    let quorum_only = MesosMasterClusterStatus {
        phase: None,
        transition: None,
        ..status.clone()
    };
    for view in [&quorum_only, status] {
        if let Err(refused) = check_restart(&names.cluster, view, member, None) {
            return RestartAction::Refuse(refused.to_string());
        }
    }
    if *step != Step::Done {
        return RestartAction::Refuse(
            RestartRefused::Transitioning {
                cluster: names.cluster.clone(),
                detail: step.describe(&names.cluster),
            }
            .to_string(),
        );
    }
    let Some(ordinal) = ordinal else {
        return RestartAction::Refuse(format!("{member} is not a member of {}", names.cluster));
    };
    let pod = pods.get(&ordinal);
    RestartAction::Restart {
        member: member.to_owned(),
        pod: pod.map(|pod| pod.name.clone()),
        uid: pod.map(|pod| pod.uid.clone()).unwrap_or_default(),
    }
}

/// Applies [`decide`]'s answer: annotations on the cluster object (merge patches
/// with its resourceVersion, so a request changed meanwhile is a conflict, never
/// lost), the pod's deletion (with its UID as precondition), the `MemberRestart`
/// condition and Events. Returns the cluster as last written, and whether a
/// restart request is still pending (the caller comes back soon).
pub async fn honour(
    api: &Api<MesosMasterCluster>,
    latest: MesosMasterCluster,
    names: &Names,
    pods: &BTreeMap<Ordinal, Pod>,
    step: &Step,
    status: &mut MesosMasterClusterStatus,
    ctx: &Context,
) -> Result<(MesosMasterCluster, bool), Error> {
    let annotations = latest.annotations();
    let request = annotations.get(ANNOTATION_RESTART_MEMBER).cloned();
    let deleted_uid = annotations.get(ANNOTATION_RESTART_POD_UID).cloned();
    let identities: BTreeMap<Ordinal, PodIdentity> = pods
        .iter()
        .filter(|(_, pod)| pod.metadata.deletion_timestamp.is_none())
        .map(|(ordinal, pod)| {
            (
                *ordinal,
                PodIdentity {
                    name: pod.name_any(),
                    uid: pod.uid().unwrap_or_default(),
                },
            )
        })
        .collect();
    let action = match (&request, &deleted_uid) {
        // Paused means no step at all, requested or planned; one under way is
        // still watched to its end (its pod is already gone).
        (Some(member), None) if latest.spec.paused => RestartAction::Refuse(format!(
            "{} is paused (spec.paused): {member} restarts once it is resumed",
            names.cluster
        )),
        _ => decide(
            names,
            request.as_deref(),
            deleted_uid.as_deref(),
            status,
            step,
            &identities,
        ),
    };
    let previous = latest.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = latest.metadata.generation;
    let mut report = |holds: bool, reason: &str, message: String| {
        status.conditions.push(condition(
            &previous.conditions,
            MEMBER_RESTART,
            holds,
            reason,
            message,
            generation,
            &now,
        ));
    };
    let event = |type_, reason: &str, note: String, action: &str| Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    let said_before = |message: &str| {
        previous
            .conditions
            .iter()
            .any(|condition| condition.type_ == MEMBER_RESTART && condition.message == message)
    };
    let mut latest = latest;
    let pending = match action {
        RestartAction::Idle => false,
        RestartAction::Forget => {
            latest = patch_annotations(
                api,
                &latest,
                serde_json::json!({ ANNOTATION_RESTART_POD_UID: null }),
            )
            .await?;
            false
        }
        RestartAction::Refuse(reason) => {
            if !said_before(&reason) {
                publish(
                    &latest,
                    ctx,
                    event(
                        EventType::Warning,
                        "RestartRefused",
                        reason.clone(),
                        "RestartMember",
                    ),
                )
                .await;
            }
            report(false, "RestartRefused", reason);
            true
        }
        RestartAction::Restart { member, pod, uid } => {
            // Write-ahead: the record is durable before the pod goes.
            latest = patch_annotations(
                api,
                &latest,
                serde_json::json!({ ANNOTATION_RESTART_POD_UID: uid }),
            )
            .await?;
            if let Some(pod) = pod {
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match pods.delete(&pod, &params).await {
                    Ok(_) => {}
                    // Gone already, or already another pod: either way it restarts.
                    Err(kube::Error::Api(response))
                        if response.code == 404 || response.code == 409 => {}
                    Err(error) => return Err(error.into()),
                }
            }
            let message = format!("restarting {member}: waiting for it to vote");
            publish(
                &latest,
                ctx,
                event(
                    EventType::Normal,
                    "RestartingMember",
                    format!(
                        "{member} restarts on request: its pod is deleted, quorum holds without it"
                    ),
                    "RestartMember",
                ),
            )
            .await;
            report(true, "Restarting", message.clone());
            if *step == Step::Done {
                status.reason = Some(message);
            }
            true
        }
        RestartAction::Wait(message) => {
            report(true, "Restarting", message.clone());
            if *step == Step::Done {
                status.reason = Some(message);
            }
            true
        }
        RestartAction::Finish(message) => {
            latest = patch_annotations(
                api,
                &latest,
                serde_json::json!({
                    ANNOTATION_RESTART_MEMBER: null,
                    ANNOTATION_RESTART_POD_UID: null,
                }),
            )
            .await?;
            publish(
                &latest,
                ctx,
                event(
                    EventType::Normal,
                    "MemberRestarted",
                    message.clone(),
                    "RestartMember",
                ),
            )
            .await;
            report(false, "Restarted", message);
            false
        }
    };
    Ok((latest, pending))
}

/// Merges `values` into the cluster's annotations, guarded by the resource
/// version it was read at (a concurrent edit makes the patch fail, not vanish).
async fn patch_annotations(
    api: &Api<MesosMasterCluster>,
    cluster: &MesosMasterCluster,
    values: serde_json::Value,
) -> Result<MesosMasterCluster, kube::Error> {
    let patch = serde_json::json!({
        "metadata": {
            "annotations": values,
            "resourceVersion": cluster.resource_version(),
        }
    });
    api.patch(
        &cluster.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::api::fixtures::steady;

    fn names() -> Names {
        Names {
            cluster: "prod".into(),
            namespace: "db".into(),
        }
    }

    fn pods(uids: [&str; 3]) -> BTreeMap<Ordinal, PodIdentity> {
        uids.iter()
            .enumerate()
            .map(|(ordinal, uid)| {
                (
                    ordinal as Ordinal,
                    PodIdentity {
                        name: format!("prod-{ordinal}-0"),
                        uid: uid.to_string(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_request_on_a_healthy_ensemble_deletes_that_members_pod() {
        assert_eq!(
            decide(
                &names(),
                Some("prod-1"),
                None,
                &steady([true; 3]),
                &Step::Done,
                &pods(["a", "b", "c"])
            ),
            RestartAction::Restart {
                member: "prod-1".into(),
                pod: Some("prod-1-0".into()),
                uid: "b".into()
            }
        );
    }

    #[test]
    fn the_restart_finishes_only_when_another_pod_votes() {
        let decide_with = |uids, ready| {
            decide(
                &names(),
                Some("prod-1"),
                Some("b"),
                &steady(ready),
                &Step::Done,
                &pods(uids),
            )
        };
        // The old pod, still there and ready: not yet (the delete is in flight).
        assert!(matches!(
            decide_with(["a", "b", "c"], [true; 3]),
            RestartAction::Wait(_)
        ));
        // The new pod, not voting yet.
        assert_eq!(
            decide_with(["a", "b2", "c"], [true, false, true]),
            RestartAction::Wait("restarting prod-1: waiting for it to vote".into())
        );
        assert!(matches!(
            decide_with(["a", "b2", "c"], [true; 3]),
            RestartAction::Finish(_)
        ));
    }

    #[test]
    fn refused_when_quorum_would_be_lost_or_a_transition_runs() {
        let refused = decide(
            &names(),
            Some("prod-0"),
            None,
            &steady([true, false, true]),
            &Step::Done,
            &pods(["a", "b", "c"]),
        );
        assert!(
            matches!(&refused, RestartAction::Refuse(reason) if reason.contains("would leave 1 ready master(s)")),
            "{refused:?}"
        );
        let waiting = Step::Wait {
            reason: "prod-2 catching up".into(),
        };
        assert!(matches!(
            decide(
                &names(),
                Some("prod-0"),
                None,
                &steady([true; 3]),
                &waiting,
                &pods(["a", "b", "c"])
            ),
            RestartAction::Refuse(reason) if reason.contains("transition")
        ));
        assert!(matches!(
            decide(
                &names(),
                Some("prod-7"),
                None,
                &steady([true; 3]),
                &Step::Done,
                &pods(["a", "b", "c"])
            ),
            RestartAction::Refuse(reason) if reason.contains("not a member")
        ));
    }

    #[test]
    fn a_withdrawn_request_drops_its_record() {
        let decide_with = |uid| {
            decide(
                &names(),
                None,
                uid,
                &steady([true; 3]),
                &Step::Done,
                &pods(["a", "b", "c"]),
            )
        };
        assert_eq!(decide_with(Some("b")), RestartAction::Forget);
        assert_eq!(decide_with(None), RestartAction::Idle);
    }
}
