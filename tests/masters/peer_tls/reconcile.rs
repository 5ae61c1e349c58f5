//! `spec.tls` through the reconcile loop against the in-memory Kubernetes API
//! (kube-fake-client, see `reconcile_common`): every member's StatefulSet mounts
//! the Secret, and every pod runs with the `--peer_tls*` flags and the name each
//! whitelisted member's certificate must carry.

use crate::reconcile_common::{self, pod_env, spec, World};
use mesos_operator::operator::api::TlsSpec;

#[tokio::test]
async fn a_cluster_with_tls_runs_every_member_with_the_secret_mounted() {
    let mut initial = spec(3);
    initial.tls = Some(TlsSpec {
        secret_name: "prod-members-tls".into(),
    });
    let world = World::new(initial).await;
    world.converge(3).await;

    let addresses = world.member_addresses().await;
    let expected_names: Vec<String> = (0..3u32)
        .map(|ordinal| {
            format!(
                "{}=prod-{ordinal}-0.prod-members.{}.svc",
                addresses[&ordinal],
                reconcile_common::NAMESPACE
            )
        })
        .collect();
    let statefulsets = world.statefulsets().await;
    assert_eq!(statefulsets.len(), 3);
    for (ordinal, statefulset) in &statefulsets {
        let pod = statefulset
            .spec
            .as_ref()
            .and_then(|spec| spec.template.spec.as_ref())
            .expect("pod template");
        let secret = pod.volumes.iter().flatten().find_map(|volume| {
            volume
                .secret
                .as_ref()?
                .secret_name
                .clone()
                .filter(|name| name == "prod-members-tls")
        });
        assert!(
            secret.is_some(),
            "prod-{ordinal} does not mount the TLS Secret"
        );
        let mounted = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|mount| {
                mount.mount_path == "/etc/mesos/peer-tls" && mount.read_only == Some(true)
            });
        assert!(mounted, "prod-{ordinal} does not mount /etc/mesos/peer-tls");
    }
    let pods = world.pods().await;
    assert_eq!(pods.len(), 3);
    for (ordinal, pod) in &pods {
        assert_eq!(
            pod_env(pod, "MESOS_PEER_TLS").as_deref(),
            Some("required"),
            "prod-{ordinal}"
        );
        assert_eq!(
            pod_env(pod, "MESOS_PEER_TLS_CA_FILE").as_deref(),
            Some("/etc/mesos/peer-tls/ca.crt")
        );
        assert_eq!(
            pod_env(pod, "MESOS_PEER_TLS_SERVER_NAMES"),
            Some(expected_names.join(",")),
            "prod-{ordinal}"
        );
        // The token stays: it is the second factor.
        assert!(pod_env(pod, "MESOS_ENSEMBLE_TOKEN_FILE").is_some());
    }
}
