#!/usr/bin/env bash
# Our replicated log side by side with a 3-member etcd cluster on this machine
# (issue #9). Installs etcd-server and protoc if missing (Debian), builds the
# master, the operator and the bench, and runs it; extra arguments go to the bench
# (`--quick` for a run of seconds). Prints a table and writes target/bench/report.json.
# Without etcd the bench still runs our side and marks etcd's figures unavailable.
set -euo pipefail
cd "$(dirname "$0")/.."

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

echo "== building (release)"
cargo build --release --features bench --bin bench --bin mesos-master --bin mesos-operator
exec target/release/bench "$@"
