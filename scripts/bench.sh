#!/usr/bin/env bash
# Our replicated log side by side with a 3-member etcd cluster on this machine
# (issue #9). Installs etcd-server and protoc if missing (Debian), builds the
# master, the operator and the bench, and runs it; extra arguments go to the bench
# (`--quick` for a run of seconds). Prints a table and writes target/bench/report.json.
# Without etcd the bench still runs our side and marks etcd's figures unavailable.
#
# BENCH_PROFILE=dev (what scripts/test.sh uses with `--quick`): builds only the
# bench package (bench/, which does not link the mesos-operator library) in the dev
# profile, and runs it against the master and operator binaries `cargo test
# --all-targets` already built: in CI that is the bench's own clients to compile
# and a run of seconds. The figures mean nothing there (opt-level 1, a busy box).
# The run fails if any phase fails, for us or for etcd; it asserts nothing about
# speed.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${BENCH_PROFILE:-release}"

if ! command -v protoc >/dev/null || ! command -v etcd >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "== installing etcd-server and protobuf-compiler"
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server protobuf-compiler \
      || echo "bench: could not install etcd-server/protobuf-compiler; etcd figures will be unavailable" >&2
  else
    echo "bench: etcd or protoc missing and cannot apt-get install them here" >&2
  fi
fi

case "$profile" in
  release)
    echo "== building (release)"
    # One invocation for the workspace's binaries (master, operator, bench), so
    # their shared dependencies are built once.
    cargo build --release --workspace --bins
    exec target/release/bench "$@"
    ;;
  dev)
    if ! command -v protoc >/dev/null; then
      # etcd's client is generated from its .proto files at build time.
      echo "bench: SKIPPED, protoc is missing and could not be installed" >&2
      exit 0
    fi
    echo "== building the bench (dev profile; figures are not meaningful)"
    cargo build -p mesos-bench
    # The binaries the test build made: `cargo test --all-targets` puts them in
    # target/debug for the integration tests. A plain `cargo build` of them is NOT a
    # no-op after it (without dev-dependencies the library's dependencies resolve
    # other features, and it recompiled for 4 min in CI), so build only if missing.
    if [ ! -x target/debug/mesos-master ] || [ ! -x target/debug/mesos-operator ]; then
      cargo build --bin mesos-master --bin mesos-operator
    fi
    exec target/debug/bench --master-bin target/debug/mesos-master \
      --operator-bin target/debug/mesos-operator "$@"
    ;;
  *)
    echo "bench: BENCH_PROFILE must be release or dev, not '$profile'" >&2
    exit 2
    ;;
esac
