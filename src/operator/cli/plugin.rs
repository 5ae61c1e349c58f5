//! What `kubectl mmc` does, as library calls the binary and the tests share:
//! against Kubernetes (a `kube::Client`, the MesosMasterCluster by namespace and
//! name) and against the local runtime (its state directory).

use std::fs;
use std::path::Path;

use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;

use crate::operator::api::{
    MesosMasterCluster, MesosMasterClusterSpec, MesosMasterClusterStatus, ANNOTATION_RESTART_MEMBER,
};
use crate::operator::cli::screen::{render_status, StatusSource};
use crate::operator::local::{parse_cluster, DEFAULT_CLUSTER_NAME};
use crate::operator::planner::{self, PreviewError};
use crate::operator::recovery;
use crate::operator::restart::{check_restart, RestartRefused};

/// Why a plugin command did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("reading MesosMasterCluster {namespace}/{name}: {error}")]
    Read {
        namespace: String,
        name: String,
        error: Box<kube::Error>,
    },
    #[error("writing the request on MesosMasterCluster {namespace}/{name}: {error}")]
    Write {
        namespace: String,
        name: String,
        error: Box<kube::Error>,
    },
    #[error("restart refused: {0}")]
    Refused(#[from] Box<RestartRefused>),
    #[error("cannot preview {from} -> {to} masters: {error}")]
    Preview {
        from: i32,
        to: i32,
        error: PreviewError,
    },
    #[error("{path}: {reason}")]
    StateDir { path: String, reason: String },
    #[error("recovery refused, nothing was changed: {0}")]
    RecoveryRefused(String),
}

async fn get(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<MesosMasterCluster, PluginError> {
    let api: Api<MesosMasterCluster> = Api::namespaced(client.clone(), namespace);
    api.get(name).await.map_err(|error| PluginError::Read {
        namespace: namespace.into(),
        name: name.into(),
        error: Box::new(error),
    })
}

/// `kubectl mmc status <name>`.
pub async fn status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<String, PluginError> {
    let cluster = get(client, namespace, name).await?;
    let location = format!("namespace {namespace}");
    Ok(render_status(
        &StatusSource {
            name,
            location: &location,
            spec_replicas: Some(cluster.spec.replicas),
        },
        &cluster.status.unwrap_or_default(),
    ))
}

/// The preview of moving from the size the status reports (or, before the
/// operator has written one, the spec's) to `replicas`.
fn plan_from(
    name: &str,
    spec: &MesosMasterClusterSpec,
    status: Option<&MesosMasterClusterStatus>,
    replicas: i32,
) -> Result<String, PluginError> {
    let from = status
        .map(|status| status.replicas)
        .filter(|replicas| *replicas > 0)
        .unwrap_or(spec.replicas);
    let steps =
        planner::preview(name, from, replicas, spec.single_master_exit).map_err(|error| {
            PluginError::Preview {
                from,
                to: replicas,
                error,
            }
        })?;
    let mut text = planner::render_preview(from, replicas, &steps);
    if let Some(transition) = status.and_then(|status| status.transition.as_ref()) {
        if transition
            .steps
            .iter()
            .any(|step| step.state != crate::operator::api::StepState::Done)
        {
            text.push_str(&format!(
                "note: a transition {} -> {} is in progress; this preview starts from {from} settled masters\n",
                transition.from, transition.to
            ));
        }
    }
    Ok(text)
}

/// `kubectl mmc plan <name> --replicas N`: nothing is changed.
pub async fn plan(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> Result<String, PluginError> {
    let cluster = get(client, namespace, name).await?;
    plan_from(name, &cluster.spec, cluster.status.as_ref(), replicas)
}

/// `kubectl mmc restart <name> <member>`: checks the quorum guard against the
/// current status, then writes the request annotation (a merge patch, so it
/// touches nothing else). Returns the member asked for.
pub async fn request_restart(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    member: &str,
) -> Result<String, PluginError> {
    let cluster = get(client, namespace, name).await?;
    let pending = cluster
        .annotations()
        .get(ANNOTATION_RESTART_MEMBER)
        .cloned();
    check_restart(
        name,
        &cluster.status.clone().unwrap_or_default(),
        member,
        pending.as_deref(),
    )
    .map_err(Box::new)?;
    write_checked_annotation(
        client,
        &cluster,
        namespace,
        name,
        ANNOTATION_RESTART_MEMBER,
        member,
    )
    .await?;
    Ok(member.into())
}

/// Writes one annotation of the cluster with a merge patch (it touches nothing
/// else) carrying the resource version of `checked`: a request is written only
/// against the status it was checked on, and a cluster changed since is refused.
async fn write_checked_annotation(
    client: &kube::Client,
    checked: &MesosMasterCluster,
    namespace: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Result<(), PluginError> {
    let api: Api<MesosMasterCluster> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "metadata": {
            "annotations": { key: value },
            "resourceVersion": checked.resource_version(),
        }
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|error| PluginError::Write {
            namespace: namespace.into(),
            name: name.into(),
            error: Box::new(error),
        })?;
    Ok(())
}

/// The local runtime's status and spec (`status.yaml`, `spec.yaml`).
fn local_state(
    state_dir: &Path,
) -> Result<
    (
        String,
        Option<MesosMasterClusterSpec>,
        MesosMasterClusterStatus,
    ),
    PluginError,
> {
    let status_file = state_dir.join("status.yaml");
    let text = fs::read_to_string(&status_file).map_err(|error| PluginError::StateDir {
        path: status_file.display().to_string(),
        reason: format!("{error} (has `mesos-operator local` run with this --state-dir?)"),
    })?;
    let status: MesosMasterClusterStatus =
        serde_yaml::from_str(&text).map_err(|error| PluginError::StateDir {
            path: status_file.display().to_string(),
            reason: error.to_string(),
        })?;
    let spec_file = state_dir.join("spec.yaml");
    let cluster = match fs::read_to_string(&spec_file) {
        Ok(text) => Some(
            parse_cluster(&text).map_err(|reason| PluginError::StateDir {
                path: spec_file.display().to_string(),
                reason,
            })?,
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(PluginError::StateDir {
                path: spec_file.display().to_string(),
                reason: error.to_string(),
            })
        }
    };
    let name = cluster
        .as_ref()
        .map(|cluster| cluster.name_any())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.into());
    Ok((name, cluster.map(|cluster| cluster.spec), status))
}

/// `kubectl mmc status --state-dir DIR`.
pub fn local_status(state_dir: &Path) -> Result<String, PluginError> {
    let (name, spec, status) = local_state(state_dir)?;
    let location = format!("state dir {}", state_dir.display());
    Ok(render_status(
        &StatusSource {
            name: &name,
            location: &location,
            spec_replicas: spec.map(|spec| spec.replicas),
        },
        &status,
    ))
}

/// `kubectl mmc restart <member> --state-dir DIR`: the guard against the status
/// the runtime last wrote, then `<state-dir>/restart-request` (see
/// `local::restart`). Returns the member asked for.
pub fn local_request_restart(state_dir: &Path, member: &str) -> Result<String, PluginError> {
    let (name, _, status) = local_state(state_dir)?;
    crate::operator::local::restart::write_request(state_dir, &name, &status, member).map_err(
        |error| match error {
            crate::operator::local::restart::LocalRequestError::Refused(refused) => {
                PluginError::Refused(Box::new(refused))
            }
            other => PluginError::StateDir {
                path: state_dir.display().to_string(),
                reason: other.to_string(),
            },
        },
    )?;
    Ok(member.into())
}

/// `kubectl mmc plan --state-dir DIR --replicas N`.
pub fn local_plan(state_dir: &Path, replicas: i32) -> Result<String, PluginError> {
    let (name, spec, status) = local_state(state_dir)?;
    let spec = spec.unwrap_or_else(|| MesosMasterClusterSpec::with_replicas(status.replicas));
    plan_from(&name, &spec, Some(&status), replicas)
}

/// `kubectl mmc recover <member> --log-id <hex>`: checks the status says quorum is
/// lost with `member` (`<cluster>-<ordinal>`) surviving on that log, then writes the
/// annotation the operator takes (and validates again against what it observes).
/// Returns the annotation's value.
pub async fn request_recovery(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    member: &str,
    log_id: &str,
) -> Result<String, PluginError> {
    let request = recovery::parse_request(&format!("{member}:{log_id}"))
        .map_err(|refused| PluginError::RecoveryRefused(refused.to_string()))?;
    let cluster = get(client, namespace, name).await?;
    recovery::check_against_status(&cluster.status.clone().unwrap_or_default(), &request)
        .map_err(PluginError::RecoveryRefused)?;
    let value = request.to_string();
    write_checked_annotation(
        client,
        &cluster,
        namespace,
        name,
        crate::operator::api::recovery::ANNOTATION_RECOVER_FROM,
        &value,
    )
    .await?;
    Ok(value)
}

/// `kubectl mmc recover <member> --log-id <hex> --state-dir DIR`: checks the
/// status says quorum is lost with `member` surviving on that log, then writes the
/// request file the local runtime takes (and validates again).
pub fn local_recover(state_dir: &Path, member: &str, log_id: &str) -> Result<String, PluginError> {
    let request = recovery::parse_request(&format!("{member}:{log_id}"))
        .map_err(|refused| PluginError::RecoveryRefused(refused.to_string()))?;
    let (_, _, status) = local_state(state_dir)?;
    recovery::check_against_status(&status, &request).map_err(PluginError::RecoveryRefused)?;
    let path = state_dir.join(crate::operator::local::recovery::REQUEST_FILE);
    crate::operator::atomic_file::write_atomically(&path, format!("{request}\n").as_bytes())
        .map_err(|error| PluginError::StateDir {
            path: path.display().to_string(),
            reason: format!("{error:#}"),
        })?;
    Ok(format!(
        "asked the local runtime to recover from {} (log {}): it exports what {} learned, wipes every member's log (the old log is fenced), starts them on a new log and imports the export; follow it with `kubectl mmc status --state-dir {}`\n",
        request.member,
        recovery::log_id_hex(request.log_id),
        request.member,
        state_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_status_renders_status_yaml_with_the_spec_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = crate::operator::api::fixtures::transitioning();
        fs::write(
            dir.path().join("status.yaml"),
            serde_yaml::to_string(&status).expect("yaml"),
        )
        .expect("write");
        fs::write(
            dir.path().join("spec.yaml"),
            "apiVersion: mesos.operator.dev/v1alpha1\nkind: MesosMasterCluster\nmetadata: {name: prod}\nspec: {replicas: 5}\n",
        )
        .expect("write");
        let text = local_status(dir.path()).expect("renders");
        let location = format!("state dir {}", dir.path().display());
        assert_eq!(
            text,
            render_status(
                &StatusSource {
                    name: "prod",
                    location: &location,
                    spec_replicas: Some(5),
                },
                &status
            )
        );
        let plan = local_plan(dir.path(), 5).expect("plan");
        assert!(
            plan.starts_with("3 -> 5 masters (quorum 2 -> 3): 5 steps\n"),
            "{plan}"
        );
        assert!(
            plan.contains("note: a transition 3 -> 5 is in progress"),
            "{plan}"
        );
    }

    #[test]
    fn local_status_without_a_runtime_says_where_it_looked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = local_status(dir.path()).expect_err("no status");
        assert!(error.to_string().contains("status.yaml"), "{error}");
        assert!(
            error.to_string().contains("mesos-operator local"),
            "{error}"
        );
    }
}
