//! Issue #11 in the reconcile loop, against the in-memory Kubernetes API and the
//! fake masters of `reconcile_common`: `kubectl mmc restart` requests honoured
//! (one pod deletion, the annotation removed once the member votes again, a
//! refusal while it would lose quorum), `spec.backup`'s PVC and CronJob, and
//! `spec.restoreFrom`'s Job and its outcome in the status.

mod reconcile_common;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use mesos_operator::operator::crd::condition_types::MEMBER_RESTART;
use mesos_operator::operator::crd::{MesosMasterClusterStatus, Phase};
use mesos_operator::operator::day2::restart::ANNOTATION_RESTART_MEMBER;
use mesos_operator::operator::day2::restarts::ANNOTATION_RESTART_POD_UID;
use mesos_operator::operator::day2::schedule::{
    BackupSpec, BackupVolume, RestoreFrom, RestoreState,
};
use reconcile_common::{spec, World, NAME, NAMESPACE};

/// Reconciles and ticks in turn, at most this often, while waiting for something.
const ROUNDS: usize = 20;

async fn request_restart(world: &World, member: &str) {
    let patch =
        serde_json::json!({ "metadata": { "annotations": { ANNOTATION_RESTART_MEMBER: member } } });
    world_clusters(world)
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotated");
}

fn world_clusters(world: &World) -> Api<mesos_operator::operator::crd::MesosMasterCluster> {
    Api::namespaced(world.client.clone(), NAMESPACE)
}

fn pod_deletions(world: &World, pod: &str) -> usize {
    world
        .requests()
        .iter()
        .filter(|request| {
            let path = request.path.split('?').next().unwrap_or_default();
            request.method == "DELETE" && path.ends_with(&format!("/pods/{pod}"))
        })
        .count()
}

fn restart_condition(status: &MesosMasterClusterStatus) -> Option<(String, String, String)> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == MEMBER_RESTART)
        .map(|condition| {
            (
                condition.status.clone(),
                condition.reason.clone(),
                condition.message.clone(),
            )
        })
}

async fn annotation(world: &World, key: &str) -> Option<String> {
    world.cluster().await.annotations().get(key).cloned()
}

#[tokio::test]
async fn a_restart_request_deletes_the_pod_once_and_is_cleared_when_it_votes_again() {
    let world = World::new(spec(3)).await;
    world.converge(3).await;
    let old_uid = world.pods().await[&1].uid().expect("uid");
    world.clear_requests();
    request_restart(&world, "prod-1").await;

    world.reconcile_once().await;
    let status = world.cluster().await.status.expect("status");
    assert_eq!(pod_deletions(&world, "prod-1-0"), 1, "{status:#?}");
    assert!(!world.pods().await.contains_key(&1), "prod-1's pod is gone");
    assert_eq!(
        annotation(&world, ANNOTATION_RESTART_POD_UID).await,
        Some(old_uid.clone()),
        "the deleted pod is recorded"
    );
    let status = world.cluster().await.status.expect("status");
    assert_eq!(
        restart_condition(&status),
        Some((
            "True".into(),
            "Restarting".into(),
            "restarting prod-1: waiting for it to vote".into()
        ))
    );

    // An operator restarted before the pod is back deletes nothing more.
    world.reconcile_once().await;
    let mut done = false;
    for _ in 0..ROUNDS {
        world.tick().await;
        world.check_invariants().await;
        world.reconcile_once().await;
        if annotation(&world, ANNOTATION_RESTART_MEMBER)
            .await
            .is_none()
        {
            done = true;
            break;
        }
        let status = world.cluster().await.status.expect("status");
        let (holds, _, message) = restart_condition(&status).expect("condition");
        assert_eq!(
            (holds.as_str(), message.as_str()),
            ("True", "restarting prod-1: waiting for it to vote"),
            "{status:#?}"
        );
    }
    assert!(done, "the request was never cleared");
    assert_eq!(pod_deletions(&world, "prod-1-0"), 1, "deleted once");
    for other in ["prod-0-0", "prod-2-0"] {
        assert_eq!(pod_deletions(&world, other), 0, "{other} untouched");
    }
    let pods = world.pods().await;
    assert_ne!(pods[&1].uid().expect("uid"), old_uid, "a new pod");
    assert_eq!(annotation(&world, ANNOTATION_RESTART_POD_UID).await, None);
    let status = world.cluster().await.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Running));
    assert!(
        status.members.iter().all(|member| member.ready),
        "{status:#?}"
    );
    let (holds, reason, _) = restart_condition(&status).expect("condition");
    assert_eq!((holds.as_str(), reason.as_str()), ("False", "Restarted"));
    let reasons: Vec<String> = world
        .events()
        .await
        .iter()
        .filter_map(|event| event.reason.clone())
        .collect();
    assert!(
        reasons.contains(&"RestartingMember".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"MemberRestarted".to_string()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_restart_that_would_lose_quorum_is_refused_and_retried_later() {
    let world = World::new(spec(3)).await;
    world.converge(3).await;
    // prod-2 falls behind (not ready): restarting prod-0 would leave one of two.
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NAMESPACE);
    let behind = serde_json::json!({ "metadata": { "annotations": { "test.mesos/replica": "RECOVERING" } } });
    pods.patch("prod-2-0", &PatchParams::default(), &Patch::Merge(&behind))
        .await
        .expect("behind");
    let not_ready = serde_json::json!({ "status": { "conditions": [ { "type": "Ready", "status": "False" } ] } });
    pods.patch_status(
        "prod-2-0",
        &PatchParams::default(),
        &Patch::Merge(&not_ready),
    )
    .await
    .expect("not ready");
    world.clear_requests();
    request_restart(&world, "prod-0").await;

    world.reconcile_once().await;
    world.reconcile_once().await;
    assert_eq!(pod_deletions(&world, "prod-0-0"), 0, "nothing deleted");
    assert_eq!(
        annotation(&world, ANNOTATION_RESTART_MEMBER)
            .await
            .as_deref(),
        Some("prod-0"),
        "the request stays"
    );
    let status = world.cluster().await.status.expect("status");
    let (holds, reason, message) = restart_condition(&status).expect("condition");
    assert_eq!(
        (holds.as_str(), reason.as_str()),
        ("False", "RestartRefused")
    );
    assert!(
        message.contains("would leave 1 ready master(s), fewer than the quorum of 2"),
        "{message}"
    );
    let warnings = world
        .events()
        .await
        .iter()
        .filter(|event| event.reason.as_deref() == Some("RestartRefused"))
        .count();
    assert_eq!(warnings, 1, "one Warning, not one per reconcile");

    // prod-2 catches up: the same request goes through.
    let mut done = false;
    for _ in 0..ROUNDS {
        world.tick().await;
        world.reconcile_once().await;
        if annotation(&world, ANNOTATION_RESTART_MEMBER)
            .await
            .is_none()
        {
            done = true;
            break;
        }
    }
    assert!(done, "the request was never honoured");
    assert_eq!(pod_deletions(&world, "prod-0-0"), 1);
}

#[tokio::test]
async fn a_paused_cluster_takes_no_restart_until_resumed() {
    let world = World::new(spec(3)).await;
    world.converge(3).await;
    world.set_spec(|spec| spec.paused = true).await;
    world.clear_requests();
    request_restart(&world, "prod-2").await;
    world.reconcile_once().await;
    assert_eq!(pod_deletions(&world, "prod-2-0"), 0);
    let status = world.cluster().await.status.expect("status");
    let (_, reason, message) = restart_condition(&status).expect("condition");
    assert_eq!(reason, "RestartRefused");
    assert!(message.contains("is paused"), "{message}");

    world.set_spec(|spec| spec.paused = false).await;
    world.reconcile_once().await;
    assert_eq!(pod_deletions(&world, "prod-2-0"), 1);
}

fn backup_spec(schedule: &str) -> BackupSpec {
    BackupSpec {
        schedule: schedule.into(),
        keep: 4,
        volume: BackupVolume::default(),
    }
}

#[tokio::test]
async fn spec_backup_creates_the_claim_and_a_cron_job_and_removing_it_deletes_the_cron_job() {
    let world = World::new(spec(3)).await;
    world.converge(3).await;
    world
        .set_spec(|spec| spec.backup = Some(backup_spec("15m")))
        .await;
    world.reconcile_once().await;

    let cron_jobs: Api<CronJob> = Api::namespaced(world.client.clone(), NAMESPACE);
    let cron_job = cron_jobs.get("prod-backup").await.expect("CronJob");
    let spec = cron_job.spec.expect("spec");
    assert_eq!(spec.schedule, "*/15 * * * *");
    let container = spec
        .job_template
        .spec
        .expect("job")
        .template
        .spec
        .expect("pod")
        .containers[0]
        .clone();
    let args = container.args.unwrap_or_default();
    let masters: Vec<String> = world.member_addresses().await.into_values().collect();
    assert_eq!(
        args,
        vec![
            "backup".to_string(),
            "--masters".into(),
            masters.join(","),
            "--out".into(),
            "/backups".into(),
            "--keep".into(),
            "4".into()
        ]
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(world.client.clone(), NAMESPACE);
    let claim = claims.get("prod-backups").await.expect("backups claim");
    assert_eq!(claim.metadata.owner_references, None);
    let status = world.cluster().await.status.expect("status");
    let backup = status.backup.expect("status.backup");
    assert_eq!(backup.cron_job.as_deref(), Some("prod-backup"));
    assert_eq!(backup.schedule.as_deref(), Some("*/15 * * * *"));
    assert_eq!(backup.error, None);
    assert_eq!(backup.last, None, "no backup yet");

    // The CronJob's last success is the status' last backup (its file is on a
    // volume the operator does not mount).
    let ran = serde_json::json!({ "status": { "lastSuccessfulTime": "2026-11-26T01:00:00Z" } });
    cron_jobs
        .patch_status("prod-backup", &PatchParams::default(), &Patch::Merge(&ran))
        .await
        .expect("cron job ran");
    world.reconcile_once().await;
    let status = world.cluster().await.status.expect("status");
    let last = status
        .backup
        .and_then(|backup| backup.last)
        .expect("last backup");
    assert_eq!(last.time, "2026-11-26T01:00:00Z");

    // A schedule a CronJob cannot keep: said in the status, the CronJob unchanged.
    world
        .set_spec(|spec| spec.backup = Some(backup_spec("7m")))
        .await;
    world.reconcile_once().await;
    let status = world.cluster().await.status.expect("status");
    let error = status
        .backup
        .and_then(|backup| backup.error)
        .unwrap_or_default();
    assert!(error.contains("cannot be a CronJob schedule"), "{error}");

    // A merge patch removes a field only when it says null.
    let unset = serde_json::json!({ "spec": { "backup": null } });
    world_clusters(&world)
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&unset))
        .await
        .expect("spec.backup removed");
    world.reconcile_once().await;
    assert!(cron_jobs
        .get_opt("prod-backup")
        .await
        .expect("get")
        .is_none());
    assert!(
        claims.get_opt("prod-backups").await.expect("get").is_some(),
        "backups kept"
    );
    assert_eq!(world.cluster().await.status.expect("status").backup, None);
}

async fn restore_world() -> World {
    let mut initial = spec(3);
    initial.restore_from = Some(RestoreFrom {
        backup: "registry-7-100.json".into(),
        claim_name: Some("old-backups".into()),
    });
    let world = World::new(initial).await;
    world.converge(3).await;
    world
}

#[tokio::test]
async fn restore_from_runs_one_job_once_the_ensemble_has_a_leader_and_records_success() {
    let world = restore_world().await;
    let jobs: Api<Job> = Api::namespaced(world.client.clone(), NAMESPACE);
    let job = jobs.get("prod-restore").await.expect("restore Job");
    let pod = job.spec.expect("spec").template.spec.expect("pod");
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert_eq!(
        &args[..3],
        ["restore", "--from", "/backups/registry-7-100.json"]
    );
    assert_eq!(
        pod.volumes.unwrap_or_default()[0]
            .persistent_volume_claim
            .as_ref()
            .map(|claim| claim.claim_name.clone()),
        Some("old-backups".into())
    );
    let status = world.cluster().await.status.expect("status");
    assert_eq!(
        status.restore.map(|restore| restore.state),
        Some(RestoreState::Running)
    );

    let succeeded = serde_json::json!({ "status": { "succeeded": 1 } });
    jobs.patch_status(
        "prod-restore",
        &PatchParams::default(),
        &Patch::Merge(&succeeded),
    )
    .await
    .expect("job done");
    world.reconcile_once().await;
    let restore = world
        .cluster()
        .await
        .status
        .expect("status")
        .restore
        .expect("restore");
    assert_eq!(restore.state, RestoreState::Restored, "{restore:?}");

    // Final: the Job going away changes nothing, nothing is created again.
    jobs.delete("prod-restore", &Default::default())
        .await
        .expect("deleted");
    world.reconcile_once().await;
    assert!(jobs.get_opt("prod-restore").await.expect("get").is_none());
    assert_eq!(
        world
            .cluster()
            .await
            .status
            .expect("status")
            .restore
            .map(|r| r.state),
        Some(RestoreState::Restored)
    );
}

#[tokio::test]
async fn a_failed_restore_job_is_refused_with_the_commands_message() {
    let world = restore_world().await;
    let jobs: Api<Job> = Api::namespaced(world.client.clone(), NAMESPACE);
    let failed = serde_json::json!({ "status": { "failed": 3, "conditions": [ { "type": "Failed", "status": "True" } ] } });
    jobs.patch_status(
        "prod-restore",
        &PatchParams::default(),
        &Patch::Merge(&failed),
    )
    .await
    .expect("job failed");
    let why = "Error: the backup is truncated: its JSON ends after 120 bytes";
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "prod-restore-x1", "namespace": NAMESPACE, "labels": { "job-name": "prod-restore" } },
        "spec": { "containers": [ { "name": "restore" } ] },
        "status": { "containerStatuses": [ {
            "name": "restore", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": 1, "message": why } }
        } ] }
    }))
    .expect("pod");
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NAMESPACE);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    world.reconcile_once().await;
    let restore = world
        .cluster()
        .await
        .status
        .expect("status")
        .restore
        .expect("restore");
    assert_eq!(restore.state, RestoreState::Refused);
    let message = restore.message.unwrap_or_default();
    assert!(message.contains(why), "{message}");
    assert!(message.contains("nothing was overwritten"), "{message}");
}
