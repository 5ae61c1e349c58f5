"""The MesosMasterCluster CRD the chart ships: identical to the one generated from
the Rust types (crds/mesosmastercluster.yaml), valid, and with the names,
subresources and validation the operator and users rely on."""

from __future__ import annotations

import pytest

from manifests import (
    CHART_CRD,
    CRD_API_VERSION,
    CRD_GROUP,
    CRD_KIND,
    CRD_VERSION,
    REPO,
    REPO_CRD,
    crd_document,
    crd_errors,
    crd_version_schema,
    validate_builtin,
)


def existing_crds() -> list:
    return [path for path in (CHART_CRD, REPO_CRD) if path.exists()]


def cluster(spec: dict) -> dict:
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": CRD_KIND,
        "metadata": {"name": "prod"},
        "spec": spec,
    }


def test_chart_crd_is_the_generated_crd() -> None:
    assert REPO_CRD.exists(), (
        f"{REPO_CRD.relative_to(REPO)} is missing: it is generated from the Rust types "
        "with `mesos-operator crd > crds/mesosmastercluster.yaml`; the chart's copy "
        "cannot be checked against it"
    )
    assert crd_document(CHART_CRD) == crd_document(REPO_CRD), (
        "the chart's CRD differs from the generated one; refresh it with "
        "`cp crds/mesosmastercluster.yaml charts/mesos-operator/crds/mesosmastercluster.yaml`"
    )


@pytest.mark.parametrize("path", existing_crds(), ids=lambda p: str(p.relative_to(REPO)))
def test_crd_is_valid_kubernetes_1_32(path) -> None:
    validate_builtin(crd_document(path))


@pytest.mark.parametrize("path", existing_crds(), ids=lambda p: str(p.relative_to(REPO)))
def test_crd_names_scope_and_subresources(path) -> None:
    crd = crd_document(path)
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"mesosmasterclusters.{CRD_GROUP}"
    assert spec["group"] == CRD_GROUP
    assert spec["names"]["kind"] == CRD_KIND
    assert spec["names"]["plural"] == "mesosmasterclusters"
    assert "mmc" in spec["names"]["shortNames"]
    assert spec["scope"] == "Namespaced"
    (version,) = [v for v in spec["versions"] if v["name"] == CRD_VERSION]
    assert version["served"] is True and version["storage"] is True
    assert "status" in version["subresources"]
    spec_properties = crd_version_schema(crd)["properties"]["spec"]["properties"]
    assert "replicas" in spec_properties


@pytest.mark.parametrize("path", existing_crds(), ids=lambda p: str(p.relative_to(REPO)))
@pytest.mark.parametrize("replicas", [1, 3, 5, 7, 9])
def test_crd_accepts_odd_replicas_from_1_to_9(path, replicas: int) -> None:
    assert crd_errors(crd_document(path), cluster({"replicas": replicas})) == []


@pytest.mark.parametrize("path", existing_crds(), ids=lambda p: str(p.relative_to(REPO)))
@pytest.mark.parametrize("replicas", [0, 2, 4, 6, 8, 10, 11, -1])
def test_crd_refuses_other_replicas(path, replicas: int) -> None:
    assert crd_errors(crd_document(path), cluster({"replicas": replicas})) != []


@pytest.mark.parametrize("path", existing_crds(), ids=lambda p: str(p.relative_to(REPO)))
def test_crd_refuses_unknown_spec_fields(path) -> None:
    # kubectl's strict field validation refuses them; a typo must not be silently
    # dropped (storageClass instead of storage.storageClassName, say).
    assert crd_errors(crd_document(path), cluster({"replicas": 3, "replica": 5})) != []
