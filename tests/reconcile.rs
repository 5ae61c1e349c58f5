//! The reconcile loop against an in-memory Kubernetes API (kube-fake-client) and
//! fake masters: full transitions through repeated reconciles, each by a freshly
//! started operator, with the safety invariant checked after every reconcile and
//! every tick of the simulated cluster (see `reconcile_common`).

mod reconcile_common;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use mesos_operator::operator::crd::{
    condition_types, Phase, SingleMasterExit, StepState, VolumeReclaim,
};
use mesos_operator::operator::planner::MemberConfig;
use mesos_operator::operator::reconcile;
use reconcile_common::{pod_env, spec, World, NAME, NAMESPACE};

/// Every pod runs `ensemble(replicas)`, in its environment, with exactly the member
/// Services' addresses as `MESOS_MASTERS`; nothing beyond `replicas` is left.
async fn assert_settled(world: &World, replicas: u32) {
    let addresses = world.member_addresses().await;
    let masters: Vec<String> = (0..replicas)
        .map(|ordinal| addresses[&ordinal].clone())
        .collect();
    let pods = world.pods().await;
    assert_eq!(
        pods.keys().copied().collect::<Vec<_>>(),
        (0..replicas).collect::<Vec<_>>()
    );
    for (ordinal, pod) in &pods {
        assert_eq!(
            pod_env(pod, "MESOS_QUORUM"),
            Some((replicas / 2 + 1).to_string()),
            "{NAME}-{ordinal}"
        );
        assert_eq!(
            pod_env(pod, "MESOS_MASTERS"),
            Some(masters.join(",")),
            "{NAME}-{ordinal}"
        );
        assert_eq!(
            pod_env(pod, "MESOS_ADVERTISE_IP").map(|ip| format!("{ip}:5050")),
            Some(addresses[ordinal].clone())
        );
        assert_eq!(
            pod_env(pod, "MESOS_WORK_DIR").as_deref(),
            Some("/var/lib/mesos")
        );
        assert!(pod_env(pod, "MESOS_ENSEMBLE_TOKEN_FILE").is_some());
    }
    assert_eq!(
        world.claims().await.len() as u32,
        replicas,
        "one volume per member"
    );
    assert_eq!(
        world.statefulsets().await.len() as u32,
        replicas,
        "one StatefulSet per member"
    );
    let services = world.services().await;
    let member_services = services
        .keys()
        .filter(|name| name.starts_with("prod-member-"))
        .count();
    assert_eq!(member_services as u32, replicas, "{:?}", services.keys());
    for name in ["prod", "prod-members", "prod-leader"] {
        assert!(services.contains_key(name), "{name} missing");
    }

    let status = world.cluster().await.status.expect("status written");
    assert_eq!(status.phase, Some(Phase::Running), "{status:#?}");
    assert_eq!(status.replicas, replicas as i32);
    assert_eq!(status.ready_replicas, replicas as i32);
    assert_eq!(status.quorum, Some((replicas / 2 + 1) as i32));
    assert_eq!(status.target_quorum, Some((replicas / 2 + 1) as i32));
    assert_eq!(status.leader.as_deref(), Some("prod-0"));
    assert_eq!(status.members.len() as u32, replicas);
    assert!(status.members.iter().all(|member| member.ready));
    assert_eq!(status.planner_memory, None, "nothing left to remember");
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_)
            .map(|condition| condition.status.clone())
    };
    assert_eq!(
        condition(condition_types::AVAILABLE).as_deref(),
        Some("True")
    );
    assert_eq!(
        condition(condition_types::PROGRESSING).as_deref(),
        Some("False")
    );
    assert_eq!(
        condition(condition_types::DEGRADED).as_deref(),
        Some("False")
    );
    assert_eq!(
        condition(condition_types::QUORUM_SAFE).as_deref(),
        Some("True")
    );

    // The leader Service selects the labelled leader pod only.
    let leaders: Vec<String> = pods
        .values()
        .filter(|pod| {
            pod.labels()
                .get("mesos.operator.dev/leader")
                .map(String::as_str)
                == Some("true")
        })
        .map(|pod| pod.name_any())
        .collect();
    assert_eq!(leaders, vec!["prod-0-0".to_string()]);
}

fn assert_transition(
    world_status: &mesos_operator::operator::crd::MesosMasterClusterStatus,
    from: i32,
    to: i32,
) {
    let transition = world_status
        .transition
        .as_ref()
        .expect("transition recorded");
    assert_eq!((transition.from, transition.to), (from, to));
    assert_eq!(transition.current_step, None);
    assert!(transition
        .steps
        .iter()
        .all(|step| step.state == StepState::Done));
    for (index, step) in transition.steps.iter().enumerate() {
        assert_eq!(step.number as usize, index + 1);
    }
}

async fn event_notes(world: &World) -> Vec<(String, String)> {
    world
        .events()
        .await
        .into_iter()
        .map(|event| {
            (
                event.reason.unwrap_or_default(),
                event.note.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn one_to_three_to_five_to_three_to_one_with_a_fresh_operator_every_reconcile() {
    let mut initial = spec(1);
    initial.single_master_exit = SingleMasterExit::Wipe;
    let world = World::new(initial).await;

    let created = world.converge(1).await;
    assert_eq!(
        created,
        vec!["start prod-0 with --quorum=1 and a whitelist of 1 member"]
    );
    assert_settled(&world, 1).await;
    let token = world.client.clone();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(token, NAMESPACE);
    let secret = secrets
        .get("prod-ensemble-token")
        .await
        .expect("token secret");
    let token = secret.data.expect("data")["token"].0.clone();
    assert_eq!(token.len(), 64, "256 bits, hex");

    // 1 -> 3 (the guide's wipe: spec.singleMasterExit Wipe).
    world.set_spec(|spec| spec.replicas = 3).await;
    let steps = world.converge(3).await;
    assert_eq!(
        steps,
        vec![
            "stop prod-0, wipe its replicated_log and start it with --quorum=2 and a whitelist of 3 members; THE REGISTRY IS LOST: agents, maintenance, quota and weights start empty",
            "start prod-0 with --quorum=2 and a whitelist of 3 members",
            "start prod-1 with --quorum=2 and a whitelist of 3 members",
            "start prod-2 with --quorum=2 and a whitelist of 3 members",
        ]
    );
    assert_settled(&world, 3).await;
    assert_transition(&world.cluster().await.status.expect("status"), 1, 3);

    // 3 -> 5: restart the three with --quorum=3 (leader last), then start two.
    world.set_spec(|spec| spec.replicas = 5).await;
    let steps = world.converge(5).await;
    assert_eq!(
        steps,
        vec![
            "restart prod-1 with --quorum=3 and a whitelist of 5 members",
            "restart prod-2 with --quorum=3 and a whitelist of 5 members",
            "restart prod-0 with --quorum=3 and a whitelist of 5 members",
            "start prod-3 with --quorum=3 and a whitelist of 5 members",
            "start prod-4 with --quorum=3 and a whitelist of 5 members",
        ]
    );
    assert_settled(&world, 5).await;
    assert_transition(&world.cluster().await.status.expect("status"), 3, 5);

    // 5 -> 3: remove two (pods and volumes) before anyone runs --quorum=2; the
    // invariant checked on every tick fails if a volume outlived the restarts.
    world.set_spec(|spec| spec.replicas = 3).await;
    let steps = world.converge(3).await;
    assert_eq!(steps.len(), 5, "{steps:#?}");
    assert!(
        steps[0].starts_with("remove prod-4 and its volume"),
        "{steps:#?}"
    );
    assert!(
        steps[1].starts_with("remove prod-3 and its volume"),
        "{steps:#?}"
    );
    assert!(
        steps[2..].iter().all(|step| step.starts_with("restart ")),
        "{steps:#?}"
    );
    assert_settled(&world, 3).await;
    assert_transition(&world.cluster().await.status.expect("status"), 5, 3);

    // 3 -> 1.
    world.set_spec(|spec| spec.replicas = 1).await;
    let steps = world.converge(1).await;
    assert_eq!(
        steps,
        vec![
            "remove prod-2 and its volume so it never returns with old state (beyond the new ensemble)",
            "remove prod-1 and its volume so it never returns with old state (beyond the new ensemble)",
            "restart prod-0 with --quorum=1 and a whitelist of 1 member",
        ]
    );
    assert_settled(&world, 1).await;

    // The token was generated once and never replaced.
    let again = secrets
        .get("prod-ensemble-token")
        .await
        .expect("token secret");
    assert_eq!(again.data.expect("data")["token"].0, token);

    // Every step is an Event, and so is every completed transition.
    let events = event_notes(&world).await;
    for reason in [
        "CreateMember",
        "RestartMember",
        "RemoveMember",
        "WipeMember",
        "TransitionComplete",
    ] {
        assert!(
            events.iter().any(|(r, _)| r == reason),
            "no {reason} event in {events:#?}"
        );
    }
    assert!(events
        .iter()
        .any(|(_, note)| note.contains("restart prod-0 with --quorum=3")));
}

#[tokio::test]
async fn a_member_whose_volume_is_lost_is_fenced_and_replaced_with_an_empty_volume() {
    let world = World::new(spec(3)).await;
    world.converge(3).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(world.client.clone(), NAMESPACE);
    let old_uid = world.claims().await[&1].uid();
    let patch = serde_json::json!({ "metadata": { "annotations": { "mesos.operator.dev/volume-lost": "node gone" } } });
    claims
        .patch(
            "work-prod-1-0",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("marked lost");

    // The first reconcile fences prod-1 (write-ahead in status) and removes it.
    world.reconcile_once().await;
    let status = world.cluster().await.status.expect("status");
    assert!(
        status
            .planner_memory
            .as_ref()
            .is_some_and(|memory| memory.removing.contains(&1)),
        "{status:#?}"
    );
    assert!(!world.pods().await.contains_key(&1));
    assert!(!world.claims().await.contains_key(&1));

    world.tick().await;
    let steps = world.converge(3).await;
    assert!(
        steps.iter().any(|step| step.starts_with("remove prod-1")),
        "{steps:#?}"
    );
    assert!(
        steps.iter().any(|step| step.starts_with("start prod-1")),
        "{steps:#?}"
    );
    assert_settled(&world, 3).await;
    assert_ne!(
        world.claims().await[&1].uid(),
        old_uid,
        "a new, empty volume"
    );
}

#[tokio::test]
async fn leaving_single_master_mode_with_preserve_waits_and_says_why() {
    let world = World::new(spec(1)).await;
    world.converge(1).await;
    world.set_spec(|spec| spec.replicas = 3).await;
    for _ in 0..5 {
        world.reconcile_once().await;
        world.tick().await;
    }
    let status = world.cluster().await.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Degraded), "{status:#?}");
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains("export the registry from prod-0"),
        "{reason}"
    );
    assert!(reason.contains("singleMasterExit: Wipe"), "{reason}");
    assert_eq!(world.pods().await.len(), 1, "nothing was touched");
    let events = event_notes(&world).await;
    assert!(
        events.iter().any(|(reason, _)| reason == "StepBlocked"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_paused_cluster_is_observed_but_not_touched() {
    let world = World::new(spec(3)).await;
    world.converge(3).await;
    world
        .set_spec(|spec| {
            spec.replicas = 5;
            spec.paused = true;
        })
        .await;
    let before: BTreeMap<_, _> = world.running_configs().await;
    for _ in 0..3 {
        world.reconcile_once().await;
        world.tick().await;
    }
    assert_eq!(world.running_configs().await, before);
    let status = world.cluster().await.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Paused));
    assert!(status.reason.unwrap_or_default().contains("paused"));
    world.set_spec(|spec| spec.paused = false).await;
    world.converge(5).await;
    assert_eq!(
        world.running_configs().await.values().next(),
        Some(&MemberConfig::ensemble(5))
    );
}

#[tokio::test]
async fn deleting_the_cluster_deletes_volumes_only_when_the_spec_says_so() {
    for (reclaim, volumes_left) in [(VolumeReclaim::Retain, 3), (VolumeReclaim::Delete, 0)] {
        let mut initial = spec(3);
        initial.storage.reclaim = reclaim;
        let world = World::new(initial).await;
        world.converge(3).await;
        let cluster = world.cluster().await;
        assert!(cluster
            .finalizers()
            .iter()
            .any(|f| f == reconcile::FINALIZER));
        // The fake API deletes at once; hand the operator the object as the API
        // server would while the finalizer holds it.
        let mut deleting = cluster.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        reconcile::reconcile(std::sync::Arc::new(deleting), world.fresh_context())
            .await
            .expect("cleanup succeeds");
        assert_eq!(world.claims().await.len(), volumes_left, "{reclaim:?}");
        assert_eq!(
            world.cluster().await.finalizers(),
            &[reconcile_common::OTHER_FINALIZER.to_string()],
            "the operator's finalizer is released, others' kept"
        );
        let events = event_notes(&world).await;
        assert!(
            events.iter().any(|(reason, _)| reason == "Cleanup"),
            "{events:#?}"
        );
    }
}

#[tokio::test]
async fn a_template_left_ahead_of_its_pod_by_a_crash_is_put_back_and_the_pod_kept() {
    let world = World::new(spec(3)).await;
    world.converge(3).await;
    let pod_uid = world.pods().await[&1].uid();
    // As if an operator wrote prod-1's template for a restart the planner no longer
    // wants, and crashed before deleting the pod.
    let patch = serde_json::json!({ "spec": { "template": { "metadata": { "annotations": {
        "mesos.operator.dev/quorum": "3",
        "mesos.operator.dev/whitelist": "0,1,2,3,4",
    } } } } });
    let statefulsets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(world.client.clone(), NAMESPACE);
    statefulsets
        .patch("prod-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("template changed");

    world.reconcile_once().await;

    let template = world.statefulsets().await[&1]
        .spec
        .clone()
        .expect("spec")
        .template
        .metadata
        .expect("metadata")
        .annotations
        .expect("annotations");
    assert_eq!(template["mesos.operator.dev/quorum"], "2");
    assert_eq!(template["mesos.operator.dev/whitelist"], "0,1,2");
    assert_eq!(
        world.pods().await[&1].uid(),
        pod_uid,
        "the pod was not restarted"
    );
    // The member Services the stray template named were kept while a template
    // named them; the next reconcile lets them go.
    world.reconcile_once().await;
    assert_settled(&world, 3).await;
}
