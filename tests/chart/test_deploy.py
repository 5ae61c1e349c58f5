"""The plain manifests in deploy/: valid Kubernetes 1.32 objects, consistent with
each other, and example clusters the CRD accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifests import (
    CHART_CRD,
    CRD_KIND,
    DEPLOY_DIR,
    EXAMPLES_DIR,
    NAMESPACE,
    REPO,
    crd_document,
    crd_errors,
    describe,
    load_yaml_file,
    the_one,
    validate_builtin,
)

DEPLOY_FILES = sorted(DEPLOY_DIR.glob("*.yaml"))
EXAMPLE_FILES = sorted(EXAMPLES_DIR.glob("*.yaml"))


def deploy_objects() -> list[dict]:
    return [obj for path in DEPLOY_FILES for obj in load_yaml_file(path)]


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_deploy_and_examples_exist() -> None:
    assert DEPLOY_FILES, "deploy/ holds no manifests"
    assert EXAMPLE_FILES, "deploy/examples/ holds no clusters"


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=relative)
def test_every_deploy_manifest_is_valid_kubernetes_1_32(path: Path) -> None:
    objects = load_yaml_file(path)
    assert objects, f"{relative(path)} holds no object"
    for obj in objects:
        validate_builtin(obj)


def test_deploy_files_apply_in_dependency_order() -> None:
    # `kubectl apply -f deploy/` applies files in name order: the namespace must
    # come before anything in it, the ServiceAccount before the pod that uses it.
    kinds_in_order = [obj["kind"] for obj in deploy_objects()]
    assert kinds_in_order.index("Namespace") == 0
    assert kinds_in_order.index("ServiceAccount") < kinds_in_order.index("Deployment")


def test_deploy_objects_live_in_the_operator_namespace() -> None:
    objects = deploy_objects()
    namespace = the_one(objects, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    for obj in objects:
        if obj["kind"] in {"Namespace", "ClusterRole", "ClusterRoleBinding"}:
            assert "namespace" not in obj["metadata"], describe(obj)
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, describe(obj)


def test_operator_runs_as_its_service_account_bound_to_its_role() -> None:
    objects = deploy_objects()
    account = the_one(objects, "ServiceAccount")
    role = the_one(objects, "ClusterRole")
    binding = the_one(objects, "ClusterRoleBinding")
    pod = the_one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]


def test_deployment_selector_matches_its_pods() -> None:
    deployment = the_one(deploy_objects(), "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_operator_pod_is_hardened() -> None:
    pod = the_one(deploy_objects(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "limits" in container["resources"] and "requests" in container["resources"]


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=relative)
def test_every_example_is_accepted_by_the_crd(path: Path) -> None:
    crd = crd_document(CHART_CRD)
    for obj in load_yaml_file(path):
        assert obj["kind"] == CRD_KIND, describe(obj)
        assert crd_errors(crd, obj) == [], relative(path)


def test_examples_cover_one_three_and_five_masters() -> None:
    sizes = sorted(obj["spec"]["replicas"] for path in EXAMPLE_FILES for obj in load_yaml_file(path))
    assert sizes == [1, 3, 5]


def test_an_example_with_four_replicas_would_be_refused() -> None:
    # The check above is only worth something if it can fail.
    (example,) = load_yaml_file(EXAMPLES_DIR / "mmc-3.yaml")
    example["spec"]["replicas"] = 4
    assert crd_errors(crd_document(CHART_CRD), example) != []
