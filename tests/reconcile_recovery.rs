//! Guarded recovery after quorum loss (issue #11) against the in-memory Kubernetes
//! API with fake masters: the operator holds and says what survives, refuses bad
//! requests with their reason, and on a valid `mesos.operator.dev/recover-from`
//! exports the survivor's registry, deletes every member's pod and volume claim,
//! rebuilds the ensemble on a new log, imports, and drops the annotation.

mod reconcile_common;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use mesos_operator::operator::api::recovery::{RecoveryPhase, ANNOTATION_RECOVER_FROM};
use mesos_operator::operator::api::{condition_types, MesosMasterCluster, Phase};
use mesos_operator::operator::recovery::log_id_hex;
use reconcile_common::{log_id_of, spec, World, DOWN, MAX_ROUNDS, NAME, NAMESPACE};

async fn annotate_cluster(world: &World, value: Option<&str>) {
    let patch =
        serde_json::json!({ "metadata": { "annotations": { ANNOTATION_RECOVER_FROM: value } } });
    Api::<MesosMasterCluster>::namespaced(world.client.clone(), NAMESPACE)
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotated");
}

async fn reason(world: &World) -> String {
    world
        .cluster()
        .await
        .status
        .and_then(|status| status.reason)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_lost_majority_is_held_requests_are_checked_and_recovery_fences_and_imports() {
    let world = World::new(spec(3)).await;
    world.converge(3).await;
    let claims = world.claims().await;
    let old_log = claims[&0].uid().expect("uid");
    let old_id = log_id_hex(log_id_of(&old_log));
    let registry = reconcile_common::sample_registry();
    world
        .registry
        .lock()
        .expect("registry")
        .data
        .insert(old_log.clone(), registry.clone());
    world
        .set_spec(|spec| spec.recovery.quorum_loss_seconds = 3600)
        .await;

    // prod-1 and prod-2 are gone: their masters answer nothing.
    for ordinal in [1, 2] {
        let patch = serde_json::json!({ "metadata": { "annotations": { DOWN: "true" } } });
        Api::<Pod>::namespaced(world.client.clone(), NAMESPACE)
            .patch(
                &format!("prod-{ordinal}-0"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("down");
    }
    world.clear_requests();
    for _ in 0..3 {
        world.reconcile_once().await;
        world.tick().await;
    }
    let status = world.cluster().await.status.expect("status");
    assert_eq!(status.phase, Some(Phase::QuorumLost), "{status:#?}");
    let message = status.reason.clone().unwrap_or_default();
    for part in [
        format!("prod-0 (log {old_id}, VOTING"),
        "prod-1 (not answering)".to_owned(),
        "prod-2 (not answering)".to_owned(),
        format!("most advanced: prod-0 (log {old_id})"),
        format!("kubectl mmc recover prod-0 --log-id {old_id} -n {NAMESPACE}"),
    ] {
        assert!(message.contains(&part), "{part} not in {message}");
    }
    // The loss is timed on the wall clock, in whole seconds: on a loaded machine
    // the reconciles above may cross a second or two, and the countdown with them.
    let lost_for: u64 = message
        .strip_prefix("quorum lost for ")
        .and_then(|rest| rest.split_once("s:"))
        .and_then(|(seconds, _)| seconds.parse().ok())
        .unwrap_or_else(|| panic!("no loss duration in {message}"));
    assert!(lost_for <= 5, "{message}");
    let to_go = format!("({}s to go)", 3600 - lost_for);
    assert!(message.contains(&to_go), "{to_go} not in {message}");
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == condition_types::QUORUM_LOST && c.status == "True"));
    // Held: no member touched (the external Services' housekeeping goes on).
    let writes: Vec<String> = world
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" || r.method == "POST")
        .filter(|r| !r.path.contains("/services/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");

    // Refusals, each with its reason; nothing happens.
    for (request, expected) in [
        ("prod-0", "is not <member>:<log id in hex>"),
        (&format!("prod-1:{old_id}") as &str, "not a survivor"),
        ("prod-0:00000000000000ff", "the member reports log"),
        (&format!("prod-0:{old_id}"), "refused for now"),
    ] {
        annotate_cluster(&world, Some(request)).await;
        world.reconcile_once().await;
        let said = reason(&world).await;
        assert!(said.contains("request refused"), "{request}: {said}");
        assert!(
            said.contains(expected),
            "{request}: {expected} not in {said}"
        );
    }
    assert_eq!(world.claims().await.len(), 3);

    // The threshold passed: the request is taken.
    world
        .set_spec(|spec| spec.recovery.quorum_loss_seconds = 0)
        .await;
    world.clear_requests();
    let mut rounds = 0;
    loop {
        world.reconcile_once().await;
        world.tick().await;
        let status = world.cluster().await.status.expect("status");
        if status
            .recovery
            .as_ref()
            .is_some_and(|record| record.phase == RecoveryPhase::Done)
        {
            break;
        }
        rounds += 1;
        assert!(rounds < MAX_ROUNDS, "no recovery: {status:#?}");
    }
    let cluster = world.cluster().await;
    assert!(
        !cluster.annotations().contains_key(ANNOTATION_RECOVER_FROM),
        "the request stays: {:?}",
        cluster.annotations()
    );
    let record = cluster.status.expect("status").recovery.expect("record");
    assert_eq!(record.from_member, "prod-0");
    assert_eq!(record.old_log_id, old_id);
    assert_eq!(record.fenced_members, vec!["prod-0", "prod-1", "prod-2"]);
    assert_eq!(record.lost_members, vec!["prod-1", "prod-2"]);
    assert!(record.fenced_log_ids.contains(&old_id));

    // Every member's pod and volume claim of the old ensemble was deleted.
    let deleted: Vec<String> = world
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    for ordinal in 0..3 {
        for object in [
            format!("/pods/prod-{ordinal}-0"),
            format!("/persistentvolumeclaims/work-prod-{ordinal}-0"),
        ] {
            assert!(
                deleted
                    .iter()
                    .any(|path| path.contains(&format!("{object}?"))),
                "{object} not deleted: {deleted:#?}"
            );
        }
    }
    // The export was kept in its ConfigMap; the import went into the new log.
    let kept = Api::<ConfigMap>::namespaced(world.client.clone(), NAMESPACE)
        .get_opt("prod-recovery-export")
        .await
        .expect("read");
    assert!(kept.is_some());
    world.converge(3).await;
    let new_log = world.claims().await[&0].uid().expect("uid");
    assert_ne!(new_log, old_log);
    assert_eq!(record.new_log_id, Some(log_id_hex(log_id_of(&new_log))));
    {
        let fake = world.registry.lock().expect("registry");
        let exports = fake.calls_named("local export");
        assert!(exports
            .iter()
            .all(|c| c.pod == "prod-0-0" && c.log == old_log));
        let imports = fake.calls_named("import");
        assert_eq!(imports.len(), 1, "{:#?}", fake.calls);
        assert_eq!(imports[0].log, new_log);
        assert_eq!(fake.data.get(&new_log), Some(&registry), "nothing lost");
    }
    let status = world.cluster().await.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Running), "{status:#?}");
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == condition_types::RECOVERED && c.status == "True"));
}

async fn fake_api(status: mesos_operator::operator::api::MesosMasterClusterStatus) -> kube::Client {
    let mut cluster = MesosMasterCluster::new(
        "prod",
        mesos_operator::operator::api::MesosMasterClusterSpec::with_replicas(3),
    );
    cluster.metadata.namespace = Some("db".into());
    cluster.status = Some(status);
    kube_fake_client::ClientBuilder::new()
        .with_resource::<MesosMasterCluster>()
        .with_object(cluster)
        .build()
        .await
        .expect("fake API")
}

#[tokio::test]
async fn kubectl_mmc_recover_writes_the_annotation_only_for_a_survivor_the_status_names() {
    use mesos_operator::operator::cli::plugin;
    let lost = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: condition_types::QUORUM_LOST.into(),
        status: "True".into(),
        reason: "QuorumLost".into(),
        message: "quorum lost for 400s: 1 of quorum 2 voting; lost: prod-1 (not answering), prod-2 (not answering); survivors: prod-0 (log 0000000000000007, VOTING, learned up to position 40, holds up to 41)".into(),
        observed_generation: None,
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Default::default(),
        ),
    };
    let status = mesos_operator::operator::api::MesosMasterClusterStatus {
        phase: Some(Phase::QuorumLost),
        conditions: vec![lost],
        ..Default::default()
    };
    let client = fake_api(status).await;
    let api: Api<MesosMasterCluster> = Api::namespaced(client.clone(), "db");
    for (member, log, expected) in [
        (
            "prod-0",
            "0000000000000008",
            "does not name prod-0 as a survivor on log 0000000000000008",
        ),
        (
            "prod-1",
            "0000000000000007",
            "does not name prod-1 as a survivor",
        ),
        ("prod-0", "zz", "is not <member>:<log id in hex>"),
    ] {
        let error = plugin::request_recovery(&client, "db", "prod", member, log)
            .await
            .expect_err("refused");
        assert!(error.to_string().contains(expected), "{error}");
        let cluster = api.get("prod").await.expect("get");
        assert!(!cluster.annotations().contains_key(ANNOTATION_RECOVER_FROM));
    }
    let value = plugin::request_recovery(&client, "db", "prod", "prod-0", "7")
        .await
        .expect("requested");
    assert_eq!(value, "prod-0:0000000000000007");
    let cluster = api.get("prod").await.expect("get");
    assert_eq!(
        cluster.annotations().get(ANNOTATION_RECOVER_FROM),
        Some(&value)
    );

    let healthy = fake_api(Default::default()).await;
    let error = plugin::request_recovery(&healthy, "db", "prod", "prod-0", "7")
        .await
        .expect_err("nothing to recover");
    assert!(
        error.to_string().contains("does not say quorum is lost"),
        "{error}"
    );
}
