//! `spec.backup` and `spec.restoreFrom` on Kubernetes (issue #11): the objects
//! (pure builders, in `resources.rs` style) and the reconcile's part.
//!
//! # Backups: a CronJob, not a timer in the operator
//!
//! The operator cannot write to a volume (it mounts none, and should not: one
//! operator serves every cluster of the cluster), and a timer in the operator
//! process would miss backups while it restarts and would need leader election to
//! not take them twice. A CronJob is what users expect and inspect (`kubectl get
//! cronjobs,jobs`), keeps running without the operator, and its history says what
//! failed. It runs `mesos-operator backup --masters <members> --out /backups --keep
//! N` from the cluster's own image (which ships both binaries), with the PVC
//! `<cluster>-backups` mounted. The PVC has no owner: backups outlive the cluster,
//! which is when they are needed.
//!
//! # Restore at creation: a Job, not a ConfigMap
//!
//! The backup is on a volume the operator cannot read, and copying it into a
//! ConfigMap would cap registries at 1 MiB. So once the new ensemble has a leader
//! and has settled, the operator creates the Job `<cluster>-restore` that runs
//! `mesos-operator restore --from /backups/<file> --masters <members>` with the
//! claim mounted read-only. The command verifies the file (format, checksum, name)
//! before sending anything, and the master imports only into an empty registry
//! (409 otherwise): a bad backup or a registry with data is refused, never
//! overwritten, and the Job's failure message (its last log line) becomes
//! `status.restore.message`. The outcome is final: a restore happens at creation,
//! once.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Resource;

use crate::operator::api::backup::{
    parse_schedule, BackupStatus, LastBackup, RestoreFrom, RestoreState, RestoreStatus,
};
use crate::operator::api::{
    MesosMasterCluster, MesosMasterClusterStatus, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME,
    LABEL_REGISTRY_CLIENT,
};
use crate::operator::kubernetes::context::Context;
use crate::operator::kubernetes::error::Error;
use crate::operator::kubernetes::observe::Observation;
use crate::operator::kubernetes::resources::{member_address, Names, ResourceError, FIELD_MANAGER};
use crate::operator::planner::Step;

/// The operator binary in the cluster's image (next to `mesos-master`).
pub const OPERATOR_COMMAND: &str = "/usr/local/bin/mesos-operator";
/// Where the backups volume is mounted in the backup and restore pods.
pub const BACKUPS_DIR: &str = "/backups";
/// `app.kubernetes.io/name` of the backups PVC and of the backup/restore pods.
pub const BACKUP_APP_NAME: &str = "mesos-registry-backup";
/// The image's non-root user (distroless `nonroot`), owner of the backups.
const BACKUP_UID: i64 = 65532;
/// A backup or restore that has not finished in this long is stopped: an export
/// of even a large registry takes seconds.
const JOB_DEADLINE_SECONDS: i64 = 600;
/// Retries of one backup or restore run (a leader change mid-call).
const JOB_BACKOFF_LIMIT: i32 = 2;
/// Finished backup Jobs kept for `kubectl get jobs`.
const JOB_HISTORY: i32 = 3;

impl Names {
    pub fn backups_claim(&self) -> String {
        format!("{}-backups", self.cluster)
    }
    pub fn backup_cron_job(&self) -> String {
        format!("{}-backup", self.cluster)
    }
    pub fn restore_job(&self) -> String {
        format!("{}-restore", self.cluster)
    }
}

fn labels(names: &Names) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), BACKUP_APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), names.cluster.clone()),
        (LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
    ])
}

/// Metadata of an object the cluster owns (deleted with it), in its namespace
/// and with the backup labels.
fn owned_metadata(name: String, names: &Names, owner: OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels(names)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    }
}

fn pod_labels(names: &Names) -> BTreeMap<String, String> {
    let mut labels = labels(names);
    labels.insert(LABEL_REGISTRY_CLIENT.to_string(), names.cluster.clone());
    labels
}

fn owner(cluster: &MesosMasterCluster) -> Result<OwnerReference, ResourceError> {
    cluster
        .controller_owner_ref(&())
        .ok_or(ResourceError::MissingMetadata("uid"))
}

/// The backups PVC, `<cluster>-backups`: created once, never owned (it outlives
/// the cluster), never changed by the operator afterwards.
pub fn backups_claim(cluster: &MesosMasterCluster, names: &Names) -> PersistentVolumeClaim {
    let volume = cluster
        .spec
        .backup
        .as_ref()
        .map(|backup| backup.volume.clone())
        .unwrap_or_default();
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(names.backups_claim()),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels(names)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: volume.storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), volume.size)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn masters_arg(masters: &[SocketAddr]) -> String {
    masters
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The pod both Jobs run: the cluster's image, the operator binary, the claim.
fn pod_template(
    cluster: &MesosMasterCluster,
    names: &Names,
    container: &str,
    args: Vec<String>,
    claim: String,
    read_only: bool,
) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels(names)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            containers: vec![Container {
                name: container.into(),
                image: Some(cluster.spec.image.clone()),
                command: Some(vec![OPERATOR_COMMAND.into()]),
                args: Some(args),
                // A failure's last line (the command's one-line reason) becomes the
                // container's termination message, read back into the status.
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                volume_mounts: Some(vec![VolumeMount {
                    name: "backups".into(),
                    mount_path: BACKUPS_DIR.into(),
                    read_only: Some(read_only),
                    ..VolumeMount::default()
                }]),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Capabilities::default()
                    }),
                    ..SecurityContext::default()
                }),
                ..Container::default()
            }],
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(BACKUP_UID),
                run_as_group: Some(BACKUP_UID),
                fs_group: Some(BACKUP_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            volumes: Some(vec![Volume {
                name: "backups".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim,
                    read_only: Some(read_only),
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }),
    }
}

fn job_spec(template: PodTemplateSpec) -> JobSpec {
    JobSpec {
        backoff_limit: Some(JOB_BACKOFF_LIMIT),
        active_deadline_seconds: Some(JOB_DEADLINE_SECONDS),
        template,
        ..JobSpec::default()
    }
}

/// The CronJob `<cluster>-backup`. `masters` are the members' addresses (any of
/// them; the command finds the leader). Fails when the schedule cannot be a
/// CronJob's, with the reason for the status.
pub fn backup_cron_job(
    cluster: &MesosMasterCluster,
    names: &Names,
    masters: &[SocketAddr],
) -> Result<CronJob, String> {
    let backup = cluster
        .spec
        .backup
        .as_ref()
        .ok_or("spec.backup is not set")?;
    let cron = parse_schedule(&backup.schedule)?.cron()?;
    let owner = owner(cluster).map_err(|error| error.to_string())?;
    let args = vec![
        "backup".into(),
        "--masters".into(),
        masters_arg(masters),
        "--out".into(),
        BACKUPS_DIR.into(),
        "--keep".into(),
        backup.keep.to_string(),
    ];
    Ok(CronJob {
        metadata: owned_metadata(names.backup_cron_job(), names, owner),
        spec: Some(CronJobSpec {
            schedule: cron,
            // Two backups at once would race on pruning; a late one is skipped.
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(JOB_DEADLINE_SECONDS),
            successful_jobs_history_limit: Some(JOB_HISTORY),
            failed_jobs_history_limit: Some(JOB_HISTORY),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(names)),
                    ..ObjectMeta::default()
                }),
                spec: Some(job_spec(pod_template(
                    cluster,
                    names,
                    "backup",
                    args,
                    names.backups_claim(),
                    false,
                ))),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    })
}

/// The Job `<cluster>-restore` for `restore`. The backup must be a plain file
/// name on the claim: a path could leave the mounted volume.
pub fn restore_job(
    cluster: &MesosMasterCluster,
    names: &Names,
    restore: &RestoreFrom,
    masters: &[SocketAddr],
) -> Result<Job, String> {
    let file = restore.backup.trim();
    if file.is_empty() || file.contains('/') || file == "." || file == ".." {
        return Err(format!(
            "restoreFrom.backup {:?} must be a file name on the backups volume (registry-<log id>-<position>.json), not a path",
            restore.backup
        ));
    }
    let owner = owner(cluster).map_err(|error| error.to_string())?;
    let claim = restore
        .claim_name
        .clone()
        .unwrap_or_else(|| names.backups_claim());
    let args = vec![
        "restore".into(),
        "--from".into(),
        format!("{BACKUPS_DIR}/{file}"),
        "--masters".into(),
        masters_arg(masters),
    ];
    Ok(Job {
        metadata: owned_metadata(names.restore_job(), names, owner),
        spec: Some(job_spec(pod_template(
            cluster, names, "restore", args, claim, true,
        ))),
        ..Job::default()
    })
}

/// The addresses of the members that exist (by their Services).
fn member_addresses(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &Observation,
) -> Vec<SocketAddr> {
    observation
        .service_ips
        .keys()
        .filter_map(|ordinal| {
            member_address(cluster, names, *ordinal, &observation.service_ips).ok()
        })
        .collect()
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The reconcile's part: the backups PVC and CronJob (or the CronJob's removal
/// when `spec.backup` goes), and the restore Job and its outcome. Writes
/// `status.backup` and `status.restore`; answers whether a restore is under way
/// (the caller comes back soon to read its outcome).
pub async fn reconcile_backup_and_restore(
    cluster: &MesosMasterCluster,
    names: &Names,
    observation: &Observation,
    step: &Step,
    status: &mut MesosMasterClusterStatus,
    ctx: &Context,
) -> Result<bool, Error> {
    let masters = member_addresses(cluster, names, observation);
    status.backup = reconcile_backup(cluster, names, &masters, status.backup.take(), ctx).await?;
    let Some(restore_from) = cluster.spec.restore_from.as_ref() else {
        return Ok(false);
    };
    let previous = status.restore.take();
    let restore = reconcile_restore(
        cluster,
        names,
        restore_from,
        &masters,
        observation.observed.leader.is_some() && *step == Step::Done,
        previous,
        ctx,
    )
    .await?;
    let active = !restore.is_final();
    status.restore = Some(restore);
    Ok(active)
}

async fn reconcile_backup(
    cluster: &MesosMasterCluster,
    names: &Names,
    masters: &[SocketAddr],
    previous: Option<BackupStatus>,
    ctx: &Context,
) -> Result<Option<BackupStatus>, Error> {
    let cron_jobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let Some(backup) = cluster.spec.backup.as_ref() else {
        if previous.as_ref().is_some_and(|p| p.cron_job.is_some()) {
            match cron_jobs
                .delete(&names.backup_cron_job(), &Default::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(response)) if response.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        return Ok(None);
    };
    let mut status = previous.unwrap_or_default();
    let cron_job = match backup_cron_job(cluster, names, masters) {
        Ok(cron_job) => cron_job,
        Err(reason) => {
            status.schedule = Some(backup.schedule.clone());
            status.error = Some(reason);
            return Ok(Some(status));
        }
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
    if claims.get_opt(&names.backups_claim()).await?.is_none() {
        match claims
            .create(&PostParams::default(), &backups_claim(cluster, names))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(response)) if response.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    let applied = cron_jobs
        .patch(
            &names.backup_cron_job(),
            &apply_params(),
            &Patch::Apply(&cron_job),
        )
        .await?;
    status.schedule = cron_job.spec.map(|spec| spec.schedule);
    status.cron_job = Some(names.backup_cron_job());
    status.error = None;
    // The CronJob knows when its last backup succeeded, not the file's name
    // (written on a volume the operator does not mount).
    if let Some(time) = applied
        .status
        .and_then(|status| status.last_successful_time)
    {
        let time = time.0.to_string();
        if status.last.as_ref().map(|last| &last.time) != Some(&time) {
            status.last = Some(LastBackup {
                time,
                ..LastBackup::default()
            });
        }
    }
    Ok(Some(status))
}

async fn reconcile_restore(
    cluster: &MesosMasterCluster,
    names: &Names,
    restore_from: &RestoreFrom,
    masters: &[SocketAddr],
    settled: bool,
    previous: Option<RestoreStatus>,
    ctx: &Context,
) -> Result<RestoreStatus, Error> {
    let status = |state, message: String| RestoreStatus {
        backup: restore_from.backup.clone(),
        state,
        message: Some(message),
    };
    match previous {
        Some(previous) if previous.is_final() => Ok(previous),
        Some(previous) if previous.state == RestoreState::Running => {
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &names.namespace);
            let Some(job) = jobs.get_opt(&names.restore_job()).await? else {
                // Deleted under us: created again below.
                return start_restore(cluster, names, restore_from, masters, settled, ctx).await;
            };
            let job_status = job.status.unwrap_or_default();
            if job_status.succeeded.unwrap_or(0) > 0 {
                return Ok(status(
                    RestoreState::Restored,
                    format!(
                        "restored the registry from {} (Job {})",
                        restore_from.backup,
                        names.restore_job()
                    ),
                ));
            }
            let failed = job_status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|condition| condition.type_ == "Failed" && condition.status == "True");
            if failed {
                let why = failure_message(names, ctx).await?;
                return Ok(status(
                    RestoreState::Refused,
                    format!(
                        "Job {} failed, nothing was overwritten: {why}",
                        names.restore_job()
                    ),
                ));
            }
            Ok(previous)
        }
        _ => start_restore(cluster, names, restore_from, masters, settled, ctx).await,
    }
}

async fn start_restore(
    cluster: &MesosMasterCluster,
    names: &Names,
    restore_from: &RestoreFrom,
    masters: &[SocketAddr],
    settled: bool,
    ctx: &Context,
) -> Result<RestoreStatus, Error> {
    let status = |state, message: String| RestoreStatus {
        backup: restore_from.backup.clone(),
        state,
        message: Some(message),
    };
    let job = match restore_job(cluster, names, restore_from, masters) {
        Ok(job) => job,
        Err(reason) => return Ok(status(RestoreState::Refused, reason)),
    };
    if !settled {
        return Ok(status(
            RestoreState::Pending,
            "waiting for the new ensemble to elect a leader and settle".into(),
        ));
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &names.namespace);
    jobs.patch(&names.restore_job(), &apply_params(), &Patch::Apply(&job))
        .await?;
    Ok(status(
        RestoreState::Running,
        format!(
            "Job {} imports {} into the new ensemble",
            names.restore_job(),
            restore_from.backup
        ),
    ))
}

/// The failed restore pod's termination message (the command's last line).
async fn failure_message(names: &Names, ctx: &Context) -> Result<String, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={}", names.restore_job())))
        .await?;
    let message = listed
        .items
        .iter()
        .filter_map(|pod| {
            pod.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find_map(|container| {
                    container
                        .state
                        .as_ref()?
                        .terminated
                        .as_ref()?
                        .message
                        .clone()
                })
        })
        .next_back();
    Ok(message
        .map(|message| message.trim().to_owned())
        .unwrap_or_else(|| format!("see kubectl logs job/{}", names.restore_job())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::api::backup::{BackupSpec, BackupVolume};
    use crate::operator::api::MesosMasterClusterSpec;

    fn cluster(schedule: &str) -> (MesosMasterCluster, Names) {
        let mut spec = MesosMasterClusterSpec::with_replicas(3);
        spec.image = "registry.example/mesos:1.2".into();
        spec.backup = Some(BackupSpec {
            schedule: schedule.into(),
            keep: 5,
            volume: BackupVolume {
                size: k8s_openapi::apimachinery::pkg::api::resource::Quantity("2Gi".into()),
                storage_class_name: Some("fast".into()),
            },
        });
        let mut cluster = MesosMasterCluster::new("prod", spec);
        cluster.metadata.namespace = Some("db".into());
        cluster.metadata.uid = Some("uid-1".into());
        let names = Names::of(&cluster).expect("names");
        (cluster, names)
    }

    fn masters() -> Vec<SocketAddr> {
        vec![
            "10.96.0.1:5050".parse().expect("addr"),
            "10.96.0.2:5050".parse().expect("addr"),
        ]
    }

    #[test]
    fn the_backup_cron_job_runs_the_backup_command_on_the_claim() {
        let (cluster, names) = cluster("6h");
        let cron_job = backup_cron_job(&cluster, &names, &masters()).expect("built");
        let spec = cron_job.spec.expect("spec");
        assert_eq!(spec.schedule, "0 */6 * * *");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        let pod = spec
            .job_template
            .spec
            .expect("job")
            .template
            .spec
            .expect("pod");
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example/mesos:1.2")
        );
        assert_eq!(
            container.command.clone().unwrap_or_default(),
            vec![OPERATOR_COMMAND]
        );
        assert_eq!(
            container.args.clone().unwrap_or_default(),
            vec![
                "backup",
                "--masters",
                "10.96.0.1:5050,10.96.0.2:5050",
                "--out",
                "/backups",
                "--keep",
                "5"
            ]
        );
        let volumes = pod.volumes.unwrap_or_default();
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .map(|claim| claim.claim_name.as_str()),
            Some("prod-backups")
        );
        assert_eq!(
            cron_job.metadata.owner_references.unwrap_or_default()[0].uid,
            "uid-1"
        );
    }

    #[test]
    fn a_schedule_no_cron_job_can_keep_is_refused_with_what_would_work() {
        let (cluster, names) = cluster("7m");
        let error = backup_cron_job(&cluster, &names, &masters()).expect_err("7m");
        assert!(error.contains("divisor of 60 minutes"), "{error}");
    }

    #[test]
    fn the_backups_claim_outlives_the_cluster_and_has_the_asked_size() {
        let (cluster, names) = cluster("1h");
        let claim = backups_claim(&cluster, &names);
        assert_eq!(claim.metadata.name.as_deref(), Some("prod-backups"));
        assert_eq!(claim.metadata.owner_references, None, "not owned");
        let spec = claim.spec.expect("spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.resources.and_then(|r| r.requests).expect("requests")["storage"].0,
            "2Gi"
        );
    }

    #[test]
    fn the_restore_job_reads_one_file_from_the_named_claim_read_only() {
        let (cluster, names) = cluster("1h");
        let restore = RestoreFrom {
            backup: "registry-7-100.json".into(),
            claim_name: Some("old-backups".into()),
        };
        let job = restore_job(&cluster, &names, &restore, &masters()).expect("built");
        let pod = job.spec.expect("job").template.spec.expect("pod");
        assert_eq!(
            pod.containers[0].args.clone().unwrap_or_default(),
            vec![
                "restore",
                "--from",
                "/backups/registry-7-100.json",
                "--masters",
                "10.96.0.1:5050,10.96.0.2:5050"
            ]
        );
        let claim = pod.volumes.unwrap_or_default()[0]
            .persistent_volume_claim
            .clone()
            .expect("claim");
        assert_eq!(claim.claim_name, "old-backups");
        assert_eq!(claim.read_only, Some(true));
        for path in ["../etc/passwd", "a/b.json", ".."] {
            let restore = RestoreFrom {
                backup: path.into(),
                claim_name: None,
            };
            assert!(restore_job(&cluster, &names, &restore, &masters()).is_err());
        }
    }
}
