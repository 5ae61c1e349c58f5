"""The Helm chart, rendered with Helm's own engine (helm-python-sdk) and checked
against the Kubernetes 1.32 schemas, the values schema and the CRD."""

from __future__ import annotations

from typing import Any

import pytest
from helm_python.chart import Chart, lint, package
from helm_python.errors import HelmValuesError

from manifests import (
    CHART_CRD,
    CHART_DIR,
    CRD_API_VERSION,
    CRD_KIND,
    DEPLOY_DIR,
    NAMESPACE,
    chart,
    crd_document,
    crd_errors,
    describe,
    load_yaml_file,
    notes,
    of_kind,
    render,
    render_objects,
    the_one,
    validate_builtin,
)

# Values a user might really set, each set rendered and validated in full.
ALL_OPTIONS_ON: dict[str, Any] = {
    "exampleCluster": {"enabled": True, "replicas": 5, "storage": {"size": "5Gi", "storageClassName": "fast"}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
}
CUSTOM_RESOURCES: dict[str, Any] = {
    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}},
    "image": {"repository": "registry.example/mesos-operator", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "ports": {"http": 18080, "metrics": 19090},
    "operator": {"watchNamespace": "mesos", "logFormat": "text", "logLevel": "debug"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "podAnnotations": {"example.com/team": "platform"},
    "priorityClassName": "system-cluster-critical",
}
EXISTING_ACCOUNT: dict[str, Any] = {
    "serviceAccount": {"create": False, "name": "preexisting"},
    "rbac": {"create": False},
    "metrics": {"service": {"enabled": False}},
}
VALUE_SETS = {
    "defaults": {},
    "all-options-on": ALL_OPTIONS_ON,
    "custom-resources": CUSTOM_RESOURCES,
    "existing-service-account": EXISTING_ACCOUNT,
}


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = the_one(objects, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container["env"]}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_lints_without_warnings(values: dict[str, Any]) -> None:
    report = lint(CHART_DIR, values, strict=True, namespace=NAMESPACE, kube_version="v1.32.0")
    # Severity 1 is informational (e.g. "icon is recommended"); 2 warning, 3 error.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_is_valid_kubernetes_1_32(values: dict[str, Any]) -> None:
    objects = render_objects(values)
    assert objects, "the chart rendered no objects"
    crd = crd_document(CHART_CRD)
    for obj in objects:
        if obj["kind"] == CRD_KIND:
            # Not a built-in kind: validated against our own CRD instead.
            assert crd_errors(crd, obj) == [], describe(obj)
        elif obj["kind"] == "ServiceMonitor":
            # A Prometheus Operator CRD: neither built into Kubernetes' schemas nor
            # shipped with this chart; its shape is checked field by field in
            # test_service_monitor_only_when_enabled.
            continue
        else:
            validate_builtin(obj)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_namespaced_objects_go_to_the_release_namespace(values: dict[str, Any]) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for obj in render_objects(values):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None, describe(obj)
        else:
            assert namespace == NAMESPACE, describe(obj)


def test_defaults_render_only_the_operator() -> None:
    kinds = sorted(obj["kind"] for obj in render_objects())
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]


def test_the_chart_ships_the_crd_in_crds_dir_not_as_a_template() -> None:
    # crds/ is installed before templates and never deleted by `helm uninstall`,
    # which would otherwise delete every MesosMasterCluster and its masters.
    shipped = [entry["name"] for entry in chart().crds]
    assert shipped == ["crds/mesosmastercluster.yaml"]
    assert not of_kind(render_objects(ALL_OPTIONS_ON), "CustomResourceDefinition")


def test_operator_runs_hardened_by_default() -> None:
    objects = render_objects()
    pod = the_one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = operator_container(objects)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_operator_is_a_single_replica_replaced_by_recreate() -> None:
    deployment = the_one(render_objects(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_probes_use_the_http_port_and_metrics_its_own_port() -> None:
    container = operator_container(render_objects(CUSTOM_RESOURCES))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 18080, "metrics": 19090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = env_of(container)
    assert env["MESOS_OPERATOR_HEALTH_ADDR"] == "0.0.0.0:18080"
    assert env["MESOS_OPERATOR_METRICS_ADDR"] == "0.0.0.0:19090"


def test_custom_values_reach_the_operator_pod() -> None:
    objects = render_objects(CUSTOM_RESOURCES)
    pod = the_one(objects, "Deployment")["spec"]["template"]["spec"]
    container = operator_container(objects)
    assert container["image"] == "registry.example/mesos-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["command"] == ["/usr/local/bin/mesos-operator"]
    assert container["args"] == ["run"]
    assert container["resources"] == CUSTOM_RESOURCES["resources"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == CUSTOM_RESOURCES["tolerations"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    env = env_of(container)
    assert env["MESOS_OPERATOR_WATCH_NAMESPACE"] == "mesos"
    assert env["MESOS_OPERATOR_LOG_FORMAT"] == "text"
    assert env["RUST_LOG"] == "debug"


def test_image_tag_defaults_to_the_app_version() -> None:
    container = operator_container(render_objects())
    assert container["image"] == f"mesos-operator:{chart().metadata['appVersion']}"


def test_existing_service_account_is_used_and_nothing_cluster_wide_is_created() -> None:
    objects = render_objects(EXISTING_ACCOUNT)
    assert sorted(obj["kind"] for obj in objects) == ["Deployment"]
    pod = the_one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "preexisting"


def test_service_monitor_only_when_enabled() -> None:
    assert not of_kind(render_objects(), "ServiceMonitor")
    objects = render_objects(ALL_OPTIONS_ON)
    monitor = the_one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    # It must select the metrics Service, whose port it names.
    service = the_one(objects, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert [port["name"] for port in service["spec"]["ports"]] == ["metrics"]


def test_example_cluster_only_when_enabled() -> None:
    assert not of_kind(render_objects(), CRD_KIND)
    cluster = the_one(render_objects(ALL_OPTIONS_ON), CRD_KIND)
    assert cluster["apiVersion"] == CRD_API_VERSION
    assert cluster["spec"]["replicas"] == 5
    assert cluster["spec"]["storage"] == {"size": "5Gi", "storageClassName": "fast"}


def test_example_cluster_runs_masters_from_the_operator_image() -> None:
    # The image ships both binaries; the CRD's own default names an image this
    # repository does not build.
    values = {"exampleCluster": {"enabled": True}, "image": {"tag": "1.2.3"}}
    cluster = the_one(render_objects(values), CRD_KIND)
    assert cluster["spec"]["image"] == "mesos-operator:1.2.3"
    values["exampleCluster"]["image"] = "elsewhere/mesos-master:9"
    cluster = the_one(render_objects(values), CRD_KIND)
    assert cluster["spec"]["image"] == "elsewhere/mesos-master:9"


@pytest.mark.parametrize("replicas", [1, 3, 5, 7, 9])
def test_example_cluster_is_a_valid_mesos_master_cluster(replicas: int) -> None:
    values = {"exampleCluster": {"enabled": True, "replicas": replicas, "image": "mesos-operator:dev"}}
    cluster = the_one(render_objects(values), CRD_KIND)
    assert crd_errors(crd_document(CHART_CRD), cluster) == []


# Each of these must be refused by values.schema.json, before any template runs.
BAD_VALUES = {
    "even-replicas": {"exampleCluster": {"replicas": 4}},
    "zero-replicas": {"exampleCluster": {"replicas": 0}},
    "too-many-replicas": {"exampleCluster": {"replicas": 11}},
    "replicas-as-string": {"exampleCluster": {"replicas": "3"}},
    "negative-cpu": {"resources": {"requests": {"cpu": "-100m"}}},
    "negative-memory-limit": {"resources": {"limits": {"memory": "-1Gi"}}},
    "negative-number": {"resources": {"requests": {"cpu": -1}}},
    "not-a-quantity": {"resources": {"requests": {"memory": "lots"}}},
    "misspelt-requests": {"resources": {"request": {"cpu": "1"}}},
    "negative-master-resources": {"exampleCluster": {"resources": {"requests": {"cpu": "-1"}}}},
    "bad-storage-size": {"exampleCluster": {"storage": {"size": "-5Gi"}}},
    "bad-pull-policy": {"image": {"pullPolicy": "Sometimes"}},
    "empty-repository": {"image": {"repository": ""}},
    "port-zero": {"ports": {"http": 0}},
    "port-too-high": {"ports": {"metrics": 70000}},
    "bad-log-format": {"operator": {"logFormat": "xml"}},
    "bad-watch-namespace": {"operator": {"watchNamespace": "Not_A_Namespace"}},
    "bad-cluster-name": {"exampleCluster": {"name": "Prod"}},
    "bad-scrape-interval": {"metrics": {"serviceMonitor": {"interval": "often"}}},
    "unknown-top-level-key": {"replicaCount": 2},
    "enabled-as-string": {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_values_schema_refuses_bad_values(values: dict[str, Any]) -> None:
    merged = chart().merge_values(values)
    with pytest.raises(HelmValuesError):
        chart().validate_schema(merged)
    # And `helm install`/`template` refuses them too, not only the validator.
    with pytest.raises(HelmValuesError):
        render(values)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_values_schema_accepts_the_values_we_render(values: dict[str, Any]) -> None:
    chart().validate_schema(chart().merge_values(values))


def test_every_documented_value_is_in_the_schema() -> None:
    # additionalProperties is false at the top level, so a value added to
    # values.yaml without a schema entry would make the chart refuse its own
    # defaults; this names the missing key instead.
    schema_keys = set(chart().schema["properties"])
    assert set(chart().values) <= schema_keys, set(chart().values) - schema_keys


def test_notes_tell_how_to_create_and_watch_a_cluster() -> None:
    text = notes()
    assert "kind: MesosMasterCluster" in text
    assert "replicas: 3" in text
    assert "kubectl get mmc -w" in text
    assert "kubectl describe mmc" in text
    with_example = notes({"exampleCluster": {"enabled": True}})
    assert f"kubectl -n {NAMESPACE} get mmc example -w" in with_example


def test_chart_deployment_is_the_plain_manifest_deployment() -> None:
    """deploy/ and the chart describe the same operator pod: rendered with the
    release name and namespace deploy/ uses, the pod specs are identical."""
    (plain,) = [
        obj for path in sorted(DEPLOY_DIR.glob("*.yaml")) for obj in load_yaml_file(path)
        if obj["kind"] == "Deployment"
    ]
    rendered = the_one(render_objects(), "Deployment")
    assert rendered["metadata"]["name"] == plain["metadata"]["name"]
    assert rendered["metadata"]["namespace"] == plain["metadata"]["namespace"]
    assert rendered["spec"]["template"]["spec"] == plain["spec"]["template"]["spec"]
    assert rendered["spec"]["strategy"] == plain["spec"]["strategy"]


def test_packaged_chart_carries_the_crd_and_renders_the_same(tmp_path) -> None:
    # What `helm package` produces is what users install from a repository.
    archive = package(CHART_DIR, destination=tmp_path)
    with Chart.load(archive) as packaged:
        assert [entry["name"] for entry in packaged.crds] == ["crds/mesosmastercluster.yaml"]
        rendered = packaged.render(ALL_OPTIONS_ON, name="mesos-operator", namespace=NAMESPACE)
    assert rendered == render(ALL_OPTIONS_ON)
