"""tests/e2e/kind.sh cannot run without Docker and kind, so here it runs against
stand-ins (tests/e2e/fakes/): it must skip cleanly where tools are missing, walk
3 -> 5 -> 3 in order, stop on a status whose quorums do not intersect, and delete
its kind cluster whatever happens. The PATH holds only the stand-ins and the few
system tools the script needs, so a real kind or docker is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from manifests import REPO

SCRIPT = REPO / "tests" / "e2e" / "kind.sh"
FAKES = REPO / "tests" / "e2e" / "fakes"
SYSTEM_TOOLS = ["bash", "env", "dirname", "cat", "grep", "awk", "cut", "cp", "sleep"]
# A fake transition takes a few polls of no wait; a hang means a broken loop.
RUN_TIMEOUT_S = 60


def run_script(tmp_path: Path, fakes: list[str], **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run the e2e script"
        (bin_dir / tool).symlink_to(found)
    for fake in fakes:
        (bin_dir / fake).symlink_to(FAKES / fake)
    state = tmp_path / "state"
    state.mkdir()
    result = subprocess.run(
        [str(bin_dir / "bash"), str(SCRIPT)],
        env={"PATH": str(bin_dir), "FAKE_STATE": str(state), "E2E_POLL_INTERVAL_S": "0", **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    log = (state / "log").read_text().splitlines() if (state / "log").exists() else []
    return result, log


@pytest.mark.parametrize("absent", ["docker", "kind", "kubectl", "helm"])
def test_kind_script_skips_with_a_clear_message_when_a_tool_is_missing(tmp_path: Path, absent: str) -> None:
    tools = [tool for tool in ("docker", "kind", "kubectl", "helm") if tool != absent]
    result, log = run_script(tmp_path, tools)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SKIP: kind end-to-end test: missing"), result.stdout
    assert absent in result.stdout
    # Nothing was created: at most the daemon check ran.
    assert [line for line in log if not line.startswith("docker info")] == []


def test_kind_script_walks_three_five_three_and_deletes_its_cluster(tmp_path: Path) -> None:
    result, log = run_script(tmp_path, ["docker", "kind", "kubectl", "helm"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kind end-to-end: 1 passed, 0 failed" in result.stdout
    steps = [line for line in log if any(word in line for word in (
        "kind create", "docker build", "kind load", "helm install", " apply ",
        "patch mmc", "delete mmc", "helm uninstall", "kind delete"))]
    assert steps == [
        "kind create cluster --name mesos-operator-e2e --wait 120s",
        "docker build --tag mesos-operator:e2e .",
        "kind load docker-image mesos-operator:e2e --name mesos-operator-e2e",
        steps[3],
        "kubectl --context kind-mesos-operator-e2e --namespace mesos-e2e apply --dry-run=server -f -",
        "kubectl --context kind-mesos-operator-e2e --namespace mesos-e2e apply -f -",
        'kubectl --context kind-mesos-operator-e2e --namespace mesos-e2e patch mmc e2e --type merge --patch {"spec":{"replicas":5}}',
        'kubectl --context kind-mesos-operator-e2e --namespace mesos-e2e patch mmc e2e --type merge --patch {"spec":{"replicas":3}}',
        "kubectl --context kind-mesos-operator-e2e --namespace mesos-e2e delete mmc e2e --wait --timeout 5m",
        steps[9],
        "kind delete cluster --name mesos-operator-e2e",
    ]
    assert steps[3].startswith("helm install mesos-operator charts/mesos-operator ")
    assert "--set image.pullPolicy=Never" in steps[3]
    assert steps[9].startswith("helm uninstall mesos-operator")
    for size, quorum in ((3, 2), (5, 3), (3, 2)):
        assert f"== ready: {size} masters, --quorum={quorum}" in result.stdout


def test_kind_script_stops_when_quorums_may_not_intersect_and_still_cleans_up(tmp_path: Path) -> None:
    result, log = run_script(tmp_path, ["docker", "kind", "kubectl", "helm"], FAKE_UNSAFE="1")
    assert result.returncode != 0
    assert "quorums may not intersect" in result.stderr
    assert "---- diagnostics" in result.stdout
    assert log[-1] == "kind delete cluster --name mesos-operator-e2e"


def test_kind_script_keeps_the_cluster_when_asked(tmp_path: Path) -> None:
    result, log = run_script(tmp_path, ["docker", "kind", "kubectl", "helm"], KEEP_CLUSTER="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not any(line.startswith("kind delete") for line in log)


def test_fakes_are_executable() -> None:
    for fake in FAKES.iterdir():
        assert os.access(fake, os.X_OK), fake
