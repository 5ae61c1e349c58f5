//! The reconcile loop against an in-memory Kubernetes API (kube-fake-client) and
//! fake masters: full transitions through repeated reconciles, each by a freshly
//! started operator, with the safety invariant checked after every reconcile and
//! every tick of the simulated cluster (see `reconcile_common`).

mod reconcile_common;

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use mesos_operator::operator::api::{
    condition_types, MesosMasterClusterStatus, Phase, RegistryTransfer, SingleMasterExit,
    StepState, VolumeReclaim,
};
use mesos_operator::operator::kubernetes::reconcile;
use mesos_operator::operator::planner::MemberConfig;
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
    world_status: &mesos_operator::operator::api::MesosMasterClusterStatus,
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

/// The registry member 0's current log holds, keyed as the fake masters key logs.
fn log_of_member_0(claims: &BTreeMap<u32, PersistentVolumeClaim>) -> String {
    claims[&0].uid().expect("claim uid")
}

async fn export_config_map(world: &World) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(world.client.clone(), NAMESPACE)
        .get_opt("prod-registry-export")
        .await
        .expect("configmap read")
}

fn memory_registry(status: &MesosMasterClusterStatus) -> RegistryTransfer {
    status
        .planner_memory
        .as_ref()
        .map(|memory| memory.registry)
        .unwrap_or_default()
}

/// 1 -> 3 with a registry: a single master holding it, `Preserve` (the default).
async fn single_master_with_a_registry() -> (World, String, serde_json::Value) {
    let world = World::new(spec(1)).await;
    world.converge(1).await;
    let log = log_of_member_0(&world.claims().await);
    let registry = reconcile_common::sample_registry();
    world
        .registry
        .lock()
        .expect("registry")
        .data
        .insert(log.clone(), registry.clone());
    (world, log, registry)
}

#[tokio::test]
async fn one_to_three_with_preserve_seals_stores_the_export_first_and_imports_it_through_the_leader(
) {
    let (world, old_log, registry) = single_master_with_a_registry().await;
    world.set_spec(|spec| spec.replicas = 3).await;
    world.clear_requests();
    let steps = world.converge(3).await;
    assert_eq!(
        steps,
        vec![
            "export the registry from prod-0 to durable storage",
            "stop prod-0, wipe its replicated_log and start it with --quorum=2 and a whitelist of 3 members; the registry export will be imported",
            "start prod-0 with --quorum=2 and a whitelist of 3 members",
            "start prod-1 with --quorum=2 and a whitelist of 3 members",
            "start prod-2 with --quorum=2 and a whitelist of 3 members",
            "import the exported registry through the leader prod-0",
        ]
    );
    assert_settled(&world, 3).await;
    let new_log = log_of_member_0(&world.claims().await);
    assert_ne!(new_log, old_log, "member 0 was wiped");

    {
        let fake = world.registry.lock().expect("registry");
        // Sealed once, on the single master's old log (so before the wipe).
        let seals = fake.calls_named("seal");
        assert_eq!(seals.len(), 1, "{:#?}", fake.calls);
        assert_eq!(
            (seals[0].pod.as_str(), &seals[0].log),
            ("prod-0-0", &old_log)
        );
        // Imported once, through the leader, into the new log, with all three voting.
        let imports = fake.calls_named("import");
        assert_eq!(imports.len(), 1, "{:#?}", fake.calls);
        assert_eq!(imports[0].pod, "prod-0-0");
        assert_eq!(imports[0].log, new_log);
        assert_eq!(imports[0].voting_members, 3, "the ensemble settled first");
        assert_eq!(fake.data.get(&new_log), Some(&registry), "nothing lost");
    }

    // The export was durable in its ConfigMap before the status remembered it, and
    // both before member 0's volume was deleted.
    let requests = world.requests();
    let position = |what: &str, found: &dyn Fn(&reconcile_common::Recorded) -> bool| {
        requests
            .iter()
            .position(found)
            .unwrap_or_else(|| panic!("no request {what}"))
    };
    let stored = position("storing the export", &|request| {
        request.method == "PATCH"
            && request.path.contains("/configmaps/prod-registry-export")
            && String::from_utf8_lossy(&request.body).contains("registry-export.json")
    });
    let remembered = position("remembering Exported", &|request| {
        request.method == "PUT"
            && request.path.contains("/mesosmasterclusters/prod/status")
            && String::from_utf8_lossy(&request.body).contains(r#""registry":"Exported""#)
    });
    let wiped = position("deleting member 0's volume", &|request| {
        request.method == "DELETE"
            && request
                .path
                .contains("/persistentvolumeclaims/work-prod-0-0")
    });
    assert!(stored < remembered, "{stored} < {remembered}");
    assert!(remembered < wiped, "{remembered} < {wiped}");
    // Kept until the transition was done, then deleted.
    assert_eq!(export_config_map(&world).await, None);
    let events = event_notes(&world).await;
    for reason in ["ExportRegistry", "ImportRegistry", "RegistryExportReleased"] {
        assert!(
            events.iter().any(|(r, _)| r == reason),
            "no {reason} event in {events:#?}"
        );
    }
}

#[tokio::test]
async fn a_seal_whose_answer_is_lost_is_sealed_again_and_nothing_is_lost() {
    let (world, old_log, registry) = single_master_with_a_registry().await;
    world
        .registry
        .lock()
        .expect("registry")
        .lose_next_seal_answer = true;
    world.set_spec(|spec| spec.replicas = 3).await;

    // The master sealed, the operator never got the document: as if it crashed
    // between the seal and writing the ConfigMap.
    world.reconcile_once().await;
    let status = world.cluster().await.status.expect("status");
    assert_eq!(memory_registry(&status), RegistryTransfer::None);
    assert_eq!(export_config_map(&world).await, None);
    assert_eq!(log_of_member_0(&world.claims().await), old_log, "not wiped");
    assert!(world
        .registry
        .lock()
        .expect("registry")
        .sealed
        .contains(&old_log));
    world.tick().await;

    world.converge(3).await;
    let new_log = log_of_member_0(&world.claims().await);
    let fake = world.registry.lock().expect("registry");
    let seals = fake.calls_named("seal");
    assert_eq!(seals.len(), 2, "sealed again: {:#?}", fake.calls);
    assert!(seals.iter().all(|seal| seal.log == old_log));
    assert_eq!(fake.data.get(&new_log), Some(&registry), "nothing lost");
}

#[tokio::test]
async fn an_import_into_a_registry_holding_data_is_done_and_says_so() {
    let (world, _, registry) = single_master_with_a_registry().await;
    world.registry.lock().expect("registry").new_logs_hold_data = true;
    world.set_spec(|spec| spec.replicas = 3).await;
    world.converge(3).await;
    assert_settled(&world, 3).await;

    let new_log = log_of_member_0(&world.claims().await);
    assert_eq!(
        world.registry.lock().expect("registry").data.get(&new_log),
        None
    );
    // The export is kept, marked, for the user; the status and an Event say why.
    let kept = export_config_map(&world).await.expect("export kept");
    let document = kept.binary_data.expect("binaryData")["registry-export.json"]
        .0
        .clone();
    let stored: serde_json::Value = serde_json::from_slice(&document).expect("json");
    assert_eq!(stored["registry"], registry);
    let status = world.cluster().await.status.expect("status");
    let condition = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == condition_types::REGISTRY_EXPORT)
        .expect("RegistryExport condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "ImportSkipped")
    );
    assert!(condition.message.contains("409"), "{}", condition.message);
    let events = event_notes(&world).await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "RegistryImportSkipped"
                && note.contains("prod-registry-export")),
        "{events:#?}"
    );
    // Later reconciles leave it alone.
    world.reconcile_once().await;
    assert!(export_config_map(&world).await.is_some());
}

#[tokio::test]
async fn an_export_too_large_for_a_config_map_blocks_before_anything_is_wiped() {
    let (world, old_log, _) = single_master_with_a_registry().await;
    world
        .registry
        .lock()
        .expect("registry")
        .export_padding_bytes = 1_100_000;
    world.set_spec(|spec| spec.replicas = 3).await;
    for _ in 0..4 {
        world.reconcile_once().await;
        world.tick().await;
    }
    assert_eq!(world.pods().await.len(), 1, "nothing was started");
    assert_eq!(
        log_of_member_0(&world.claims().await),
        old_log,
        "nothing was wiped"
    );
    assert_eq!(export_config_map(&world).await, None);
    let status = world.cluster().await.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Degraded), "{status:#?}");
    assert_eq!(memory_registry(&status), RegistryTransfer::None);
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains("export the registry from prod-0"),
        "{reason}"
    );
    assert!(reason.contains("is 1100"), "the size: {reason}");
    assert!(reason.contains("1000000 bytes"), "the limit: {reason}");
    assert!(reason.contains("nothing was wiped"), "{reason}");
    let events = event_notes(&world).await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "StepBlocked" && note.contains("1000000 bytes")),
        "{events:#?}"
    );
    // The single master takes writes again.
    assert!(world.registry.lock().expect("registry").sealed.is_empty());
}

#[tokio::test]
async fn going_back_to_one_master_after_the_seal_unseals_it_and_drops_the_export() {
    let (world, old_log, registry) = single_master_with_a_registry().await;
    world.set_spec(|spec| spec.replicas = 3).await;
    world.reconcile_once().await;
    let status = world.cluster().await.status.expect("status");
    assert_eq!(memory_registry(&status), RegistryTransfer::Exported);
    assert!(export_config_map(&world).await.is_some());
    assert!(world
        .registry
        .lock()
        .expect("registry")
        .sealed
        .contains(&old_log));

    world.set_spec(|spec| spec.replicas = 1).await;
    world.converge(1).await;
    assert_settled(&world, 1).await;
    assert_eq!(
        log_of_member_0(&world.claims().await),
        old_log,
        "never wiped"
    );
    {
        let fake = world.registry.lock().expect("registry");
        assert!(fake.sealed.is_empty(), "unsealed: {:#?}", fake.calls);
        assert_eq!(fake.data.get(&old_log), Some(&registry));
    }
    assert_eq!(export_config_map(&world).await, None);
}

/// The volume template a StatefulSet PATCH carries, if any.
fn sent_claim_templates(request: &reconcile_common::Recorded) -> Option<serde_json::Value> {
    let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    body.get("spec")?.get("volumeClaimTemplates").cloned()
}

fn storage_request(templates: &serde_json::Value) -> Option<&str> {
    templates[0]["spec"]["resources"]["requests"]["storage"].as_str()
}

#[tokio::test]
async fn a_storage_change_keeps_existing_members_volumes_and_sizes_new_members() {
    let world = World::new(spec(3)).await;
    world.converge(3).await;
    let before: BTreeMap<u32, serde_json::Value> = world
        .statefulsets()
        .await
        .into_iter()
        .map(|(ordinal, sts)| {
            let templates = sts.spec.expect("spec").volume_claim_templates;
            (ordinal, serde_json::to_value(templates).expect("json"))
        })
        .collect();
    assert!(before.values().all(|t| storage_request(t) == Some("1Gi")));

    world.clear_requests();
    world
        .set_spec(|spec| {
            spec.storage.size = Quantity("2Gi".into());
            spec.replicas = 5;
        })
        .await;
    world.converge(5).await;

    // Every StatefulSet the operator sent for an existing member carried exactly the
    // template that member has (the API server refuses any change to it).
    let mut sent_existing = 0;
    for request in world.requests() {
        if request.method != "PATCH" || !request.path.contains("/statefulsets/") {
            continue;
        }
        let name = request.path.rsplit('/').next().unwrap_or_default();
        let name = name.split('?').next().unwrap_or_default();
        let ordinal: u32 = name.trim_start_matches("prod-").parse().expect("member");
        let sent = sent_claim_templates(&request).expect("templates sent");
        match before.get(&ordinal) {
            Some(existing) => {
                assert_eq!(&sent, existing, "prod-{ordinal}'s template changed");
                sent_existing += 1;
            }
            None => assert_eq!(storage_request(&sent), Some("2Gi"), "prod-{ordinal}"),
        }
    }
    assert!(
        sent_existing >= 3,
        "the restarts re-applied the existing members"
    );
    let after = world.statefulsets().await;
    for (ordinal, sts) in &after {
        let templates =
            serde_json::to_value(&sts.spec.as_ref().expect("spec").volume_claim_templates)
                .expect("json");
        let expected = if *ordinal < 3 { "1Gi" } else { "2Gi" };
        assert_eq!(
            storage_request(&templates),
            Some(expected),
            "prod-{ordinal}"
        );
    }

    let status = world.cluster().await.status.expect("status");
    let condition = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == condition_types::STORAGE_CURRENT)
        .expect("StorageCurrent condition");
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason, "ClaimTemplatesImmutable");
    assert!(
        condition
            .message
            .starts_with("prod-0, prod-1, prod-2 keep their volumes"),
        "{}",
        condition.message
    );
    let events = event_notes(&world).await;
    assert!(
        events.iter().any(|(reason, _)| reason == "StorageKept"),
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

/// (API group, resource[/subresource]) -> verb of one request, as RBAC names them.
fn rbac_pair(request: &reconcile_common::Recorded) -> (String, String, String) {
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => panic!("unexpected path {}", request.path),
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, subresource] => (format!("{resource}/{subresource}"), true),
        _ => panic!("unexpected path {}", request.path),
    };
    let verb = match (request.method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false) if query.split('&').any(|q| q == "watch=true") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (method, _) => panic!("unexpected method {method}"),
    };
    (group, resource, verb.to_string())
}

/// Every (group, resource, verb) the ClusterRole in deploy/ grants.
fn deploy_grants() -> BTreeSet<(String, String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/20-rbac.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/20-rbac.yaml");
    let mut grants = BTreeSet::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document).expect("yaml");
        if value["kind"].as_str() != Some("ClusterRole") {
            continue;
        }
        let strings = |value: &serde_yaml::Value| -> Vec<String> {
            value
                .as_sequence()
                .expect("a list")
                .iter()
                .map(|item| item.as_str().expect("a string").to_string())
                .collect()
        };
        for rule in value["rules"].as_sequence().expect("rules") {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        grants.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    grants
}

/// Granted for what the reconcile loop never sends itself, each for a stated reason.
const GRANTED_BEYOND_RECONCILE: [(&str, &str, &str, &str); 4] = [
    (
        "mesos.operator.dev",
        "mesosmasterclusters",
        "list",
        "run_controller's start-up check and the controller's watcher",
    ),
    (
        "mesos.operator.dev",
        "mesosmasterclusters",
        "watch",
        "the controller's watcher",
    ),
    ("apps", "statefulsets", "watch", "the controller's watch of owned StatefulSets"),
    (
        "mesos.operator.dev",
        "mesosmasterclusters/finalizers",
        "update",
        "no request: admission (OwnerReferencesPermissionEnforcement) checks it for blockOwnerDeletion owner references",
    ),
];

/// Issue #10: the ClusterRole grants exactly what the operator calls. Every request
/// an operator sends to the in-memory API through a whole life (create, 1 -> 3 with
/// Preserve, 3 -> 5 -> 3, a lost volume, a blocked export, 3 -> 1, deletion with
/// reclaim Delete) is recorded and turned into (group, resource, verb); that set,
/// plus the controller's watches, must equal what deploy/20-rbac.yaml grants (the
/// chart is kept identical by tests/chart/test_rbac.py).
#[tokio::test]
async fn the_cluster_role_grants_exactly_the_verbs_the_operator_calls() {
    let mut initial = spec(1);
    initial.storage.reclaim = VolumeReclaim::Delete;
    let world = World::new(initial).await;
    // One operator throughout, as in production: its event recorder patches a
    // repeated Event rather than creating it again.
    world.keep_one_operator();
    world.converge(1).await;

    // A blocked export, twice (the same Warning repeated), then 1 -> 3 with Preserve.
    world
        .registry
        .lock()
        .expect("registry")
        .export_padding_bytes = 1_100_000;
    world.set_spec(|spec| spec.replicas = 3).await;
    world.reconcile_once().await;
    world.reconcile_once().await;
    world
        .registry
        .lock()
        .expect("registry")
        .export_padding_bytes = 0;
    world.converge(3).await;
    // Issue #11: spec.backup (the backups claim, the CronJob), spec.restoreFrom (the
    // Job, applied then read back), then spec.backup removed (the CronJob deleted).
    world
        .set_spec(|spec| {
            spec.backup = Some(
                serde_json::from_value(serde_json::json!({"schedule": "1h"})).expect("backup"),
            );
            spec.restore_from = Some(
                serde_json::from_value(serde_json::json!({"backup": "registry-7-100.json"}))
                    .expect("restore"),
            );
        })
        .await;
    world.reconcile_once().await;
    world.reconcile_once().await;
    let unset = serde_json::json!({ "spec": { "backup": null } });
    Api::<mesos_operator::operator::api::MesosMasterCluster>::namespaced(
        world.client.clone(),
        NAMESPACE,
    )
    .patch(
        reconcile_common::NAME,
        &PatchParams::default(),
        &Patch::Merge(&unset),
    )
    .await
    .expect("spec.backup removed");
    world.reconcile_once().await;
    world.set_spec(|spec| spec.replicas = 5).await;
    world.converge(5).await;
    world.set_spec(|spec| spec.replicas = 3).await;
    world.converge(3).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(world.client.clone(), NAMESPACE);
    let patch = serde_json::json!({ "metadata": { "annotations": { "mesos.operator.dev/volume-lost": "node gone" } } });
    claims
        .patch(
            "work-prod-1-0",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("marked lost");
    world.converge(3).await;
    world.set_spec(|spec| spec.replicas = 1).await;
    world.converge(1).await;
    let mut deleting = world.cluster().await;
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    reconcile::reconcile(std::sync::Arc::new(deleting), world.fresh_context())
        .await
        .expect("cleanup succeeds");

    let used: BTreeSet<(String, String, String)> = world.requests().iter().map(rbac_pair).collect();
    let beyond: BTreeSet<(String, String, String)> = GRANTED_BEYOND_RECONCILE
        .iter()
        .map(|(group, resource, verb, _why)| {
            (group.to_string(), resource.to_string(), verb.to_string())
        })
        .collect();
    assert!(
        used.is_disjoint(&beyond),
        "used by reconcile, so not 'beyond' it: {:?}",
        used.intersection(&beyond).collect::<Vec<_>>()
    );
    let granted = deploy_grants();
    let needed: BTreeSet<_> = used.union(&beyond).cloned().collect();
    assert_eq!(
        granted.difference(&needed).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "granted but never used"
    );
    assert_eq!(
        needed.difference(&granted).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "used but not granted"
    );
}
