"""The operator's permissions: exactly the verbs it uses, the same in the chart
and in deploy/. That these are the verbs the code calls is checked by
tests/reconcile.rs (the_cluster_role_grants_exactly_the_verbs_the_operator_calls),
which records every request the operator sends during whole transitions."""

from __future__ import annotations

from manifests import DEPLOY_DIR, load_yaml_file, render_objects, the_one

# (API group, resource) -> verbs, the operator's whole footprint. Adding a verb
# here is a decision to review: say in the RBAC file's comment why it is needed.
EXPECTED: dict[tuple[str, str], set[str]] = {
    # Controller list/watch; the finalizer helper's JSON patch.
    ("mesos.operator.dev", "mesosmasterclusters"): {"list", "watch", "patch"},
    # Status replaced whole with optimistic concurrency.
    ("mesos.operator.dev", "mesosmasterclusters/status"): {"update"},
    ("mesos.operator.dev", "mesosmasterclusters/finalizers"): {"update"},
    # One StatefulSet per member: observed, watched as owned, applied, deleted.
    ("apps", "statefulsets"): {"list", "watch", "patch", "delete"},
    # Shared and per-member Services: observed, applied, deleted when unused.
    ("", "services"): {"list", "patch", "delete"},
    # The ensemble token: created once, never updated.
    ("", "secrets"): {"get", "create"},
    # Volumes: observed; deleted with a removed member (or per reclaim).
    ("", "persistentvolumeclaims"): {"list", "delete", "get", "create"},
    # spec.backup's CronJob and spec.restoreFrom's Job (src/operator/day2/jobs.rs).
    ("batch", "cronjobs"): {"patch", "delete"},
    ("batch", "jobs"): {"patch", "get"},
    ("policy", "poddisruptionbudgets"): {"patch"},
    ("networking.k8s.io", "networkpolicies"): {"patch"},
    ("", "pods"): {"list", "delete", "patch"},
    # The registry export of a Preserve exit: applied, read for the import, deleted.
    ("", "configmaps"): {"get", "patch", "delete"},
    ("events.k8s.io", "events"): {"create", "patch"},
}


def granted(role: dict) -> dict[tuple[str, str], set[str]]:
    """Every (group, resource) the role grants, with its verbs, however the rules
    are grouped."""
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def deploy_role() -> dict:
    return the_one(load_yaml_file(DEPLOY_DIR / "20-rbac.yaml"), "ClusterRole")


def chart_role() -> dict:
    return the_one(render_objects(), "ClusterRole")


def test_deploy_grants_exactly_the_verbs_the_operator_uses() -> None:
    assert granted(deploy_role()) == EXPECTED


def test_chart_grants_exactly_the_verbs_the_operator_uses() -> None:
    assert granted(chart_role()) == EXPECTED


def test_chart_and_deploy_have_the_same_rules() -> None:
    assert chart_role()["rules"] == deploy_role()["rules"]


def test_no_wildcards_and_no_escalation_verbs() -> None:
    for role in (deploy_role(), chart_role()):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_the_operator_never_creates_or_deletes_clusters() -> None:
    # Users own their MesosMasterClusters; the operator only reconciles them.
    verbs = granted(deploy_role())[("mesos.operator.dev", "mesosmasterclusters")]
    assert not {"create", "delete", "deletecollection"} & verbs
