"""The Dockerfile, read with BuildKit's own parser (no Docker engine needed) and
linted with hadolint: a Rust build stage, a minimal non-root runtime that ships
every binary of the package, and a build context without the heavy directories."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest

from manifests import DEPLOY_DIR, REPO, load_yaml_file, render_objects, the_one

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# distroless' "nonroot" user; the chart and deploy/ run the pod as this uid.
NONROOT_UID = 65532


def instructions() -> list:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def stages() -> list[list]:
    """Instructions grouped by stage (each starts at a FROM)."""
    grouped: list[list] = []
    for instruction in instructions():
        if instruction.cmd == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


def package_binaries() -> list[str]:
    manifest = tomllib.loads((REPO / "Cargo.toml").read_text())
    default = set(manifest.get("features", {}).get("default", []))
    # Binaries behind a feature off by default are tools, not what the image ships
    # (the etcd benchmark is another workspace package, bench/, not built here); the
    # operator's feature is on by default.
    return sorted(
        target["name"]
        for target in manifest.get("bin", [])
        if set(target.get("required-features", [])) <= default
    )


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.prefix) / "bin" / "hadolint"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_stage_is_a_locked_release_build_of_every_binary_on_debian_rust() -> None:
    build = stages()[0]
    image = build[0].value[0]
    assert "rust:" in image and image.endswith("-bookworm"), image
    (run,) = [i for i in build if i.cmd == "RUN" and "cargo build" in i.value[0]]
    command = run.value[0]
    assert "--release" in command and "--locked" in command
    for binary in package_binaries():
        assert f"--bin {binary}" in command, binary


def test_runtime_is_distroless_non_root_and_ships_both_binaries() -> None:
    runtime = stages()[-1]
    assert len(stages()) >= 2, "the image must be multi-stage"
    assert runtime[0].value[0].startswith("gcr.io/distroless/cc-debian12:nonroot")
    (user,) = [i for i in runtime if i.cmd == "USER"]
    assert user.value[0].split(":")[0] == str(NONROOT_UID)
    copied = [i for i in runtime if i.cmd == "COPY" and "--from=build" in i.flags]
    shipped = {Path(source).name for copy in copied for source in copy.value[:-1]}
    destinations = {copy.value[-1] for copy in copied}
    assert shipped == set(package_binaries()) == {"mesos-master", "mesos-operator"}
    assert destinations == {"/usr/local/bin/"}


def test_runtime_has_no_entrypoint_so_kubernetes_command_picks_the_binary() -> None:
    runtime = stages()[-1]
    assert not [i for i in runtime if i.cmd == "ENTRYPOINT"]
    (cmd,) = [i for i in runtime if i.cmd == "CMD"]
    assert list(cmd.value) == ["/usr/local/bin/mesos-operator", "run"]


def test_pods_run_as_the_image_user() -> None:
    plain = the_one(
        [obj for path in sorted(DEPLOY_DIR.glob("*.yaml")) for obj in load_yaml_file(path)], "Deployment"
    )
    rendered = the_one(render_objects(), "Deployment")
    for deployment in (plain, rendered):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == NONROOT_UID
        assert pod["containers"][0]["command"] == ["/usr/local/bin/mesos-operator"]


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (the last
    matching pattern wins; `!` re-includes), for the simple patterns we use."""
    result = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        candidates = prefixes + [p.split("/", 1)[1] for p in prefixes if "/" in p and pattern.startswith("**/")]
        bare = pattern.removeprefix("**/")
        if any(fnmatch.fnmatchcase(candidate, bare if pattern.startswith("**/") else pattern) for candidate in candidates):
            result = not negate
    return result


# bench/Cargo.toml: a workspace member's manifest, which cargo reads for any build.
@pytest.mark.parametrize("path", ["Cargo.toml", "Cargo.lock", "src/lib.rs", "src/bin/mesos-master.rs", "bench/Cargo.toml"])
def test_build_context_keeps_what_cargo_needs(path: str) -> None:
    assert not ignored(path)


@pytest.mark.parametrize("path", [".git/HEAD", "target/release/mesos-master", ".venv/bin/python", "charts/mesos-operator/Chart.yaml"])
def test_build_context_leaves_out_heavy_and_unrelated_directories(path: str) -> None:
    assert ignored(path)
