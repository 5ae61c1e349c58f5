#!/usr/bin/env bash
# End-to-end on a real Kubernetes: a kind cluster, the real image, the Helm chart,
# and a MesosMasterCluster taken through 3 -> 5 -> 3 masters.
#
#   bash tests/e2e/kind.sh
#
# Needs docker (with a running daemon), kind, kubectl and helm; where any is
# missing it says which and exits 0 (skipped), so CI machines without Docker pass.
# Environment:
#   KIND_CLUSTER   name of the kind cluster to create (default mesos-operator-e2e)
#   KEEP_CLUSTER=1 leave the kind cluster running at the end, for debugging
#   SKIP_BUILD=1   use an already built mesos-operator:e2e image
set -euo pipefail
cd "$(dirname "$0")/../.."

KIND_CLUSTER="${KIND_CLUSTER:-mesos-operator-e2e}"
IMAGE_REPOSITORY=mesos-operator
IMAGE_TAG=e2e
IMAGE="${IMAGE_REPOSITORY}:${IMAGE_TAG}"
OPERATOR_NAMESPACE=mesos-operator
TEST_NAMESPACE=mesos-e2e
MMC=e2e

# A transition restarts members one at a time and waits for each to vote and
# catch up; on a laptop's kind cluster a step takes seconds, a whole 3 -> 5 a
# few minutes. Ten minutes is generous without hiding a stuck step for long.
READY_TIMEOUT_S=600
# How often the cluster's status is read while waiting.
POLL_INTERVAL_S="${E2E_POLL_INTERVAL_S:-3}"
# The operator's install (image pull, probes) and the CRD's registration.
INSTALL_TIMEOUT=5m

log() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# --- skip where the tools are not there -------------------------------------
missing=()
for tool in docker kind kubectl helm; do
  command -v "${tool}" >/dev/null 2>&1 || missing+=("${tool}")
done
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=("a running Docker daemon")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "SKIP: kind end-to-end test: missing ${missing[*]} (needs docker with a running daemon, kind, kubectl and helm)"
  exit 0
fi

CONTEXT="kind-${KIND_CLUSTER}"
k() { kubectl --context "${CONTEXT}" "$@"; }
kt() { k --namespace "${TEST_NAMESPACE}" "$@"; }

# --- diagnostics and clean-up ------------------------------------------------
created_cluster=0
diagnostics() {
  echo "---- diagnostics"
  kt get mmc "${MMC}" -o yaml || true
  kt describe mmc "${MMC}" || true
  kt get statefulsets,pods,pvc,services,poddisruptionbudgets -o wide || true
  kt get events --sort-by=.lastTimestamp || true
  k --namespace "${OPERATOR_NAMESPACE}" logs deployment/mesos-operator --tail=200 || true
  for pod in $(kt get pods -o name 2>/dev/null); do
    echo "---- ${pod}"
    kt logs "${pod}" --tail=50 || true
  done
}
cleanup() {
  local status=$?
  if [ "${status}" -ne 0 ] && [ "${created_cluster}" -eq 1 ]; then
    diagnostics
  fi
  if [ "${created_cluster}" -eq 1 ]; then
    if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
      log "keeping kind cluster ${KIND_CLUSTER} (kind delete cluster --name ${KIND_CLUSTER})"
    else
      log "deleting kind cluster ${KIND_CLUSTER}"
      kind delete cluster --name "${KIND_CLUSTER}" || true
    fi
  fi
  exit "${status}"
}
trap cleanup EXIT

# --- cluster, image, operator ------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER}"; then
  fail "a kind cluster named ${KIND_CLUSTER} exists already; delete it (kind delete cluster --name ${KIND_CLUSTER}) or set KIND_CLUSTER"
fi
log "creating kind cluster ${KIND_CLUSTER}"
kind create cluster --name "${KIND_CLUSTER}" --wait 120s
created_cluster=1

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building ${IMAGE}"
  docker build --tag "${IMAGE}" .
fi
log "loading ${IMAGE} into the kind nodes"
kind load docker-image "${IMAGE}" --name "${KIND_CLUSTER}"

log "installing the chart"
# pullPolicy Never: the image exists only inside the kind nodes.
helm install mesos-operator charts/mesos-operator \
  --kube-context "${CONTEXT}" \
  --namespace "${OPERATOR_NAMESPACE}" --create-namespace \
  --set image.repository="${IMAGE_REPOSITORY}" \
  --set image.tag="${IMAGE_TAG}" \
  --set image.pullPolicy=Never \
  --wait --timeout "${INSTALL_TIMEOUT}"
k wait --for condition=established --timeout "${INSTALL_TIMEOUT}" \
  crd/mesosmasterclusters.mesos.operator.dev
k --namespace "${OPERATOR_NAMESPACE}" rollout status deployment/mesos-operator --timeout "${INSTALL_TIMEOUT}"

# The API server must refuse an even ensemble before any operator sees it.
k create namespace "${TEST_NAMESPACE}"
if kt apply --dry-run=server -f - >/dev/null 2>&1 <<'YAML'
apiVersion: mesos.operator.dev/v1alpha1
kind: MesosMasterCluster
metadata:
  name: even
spec:
  replicas: 4
YAML
then
  fail "the API server accepted a MesosMasterCluster with replicas: 4"
fi
log "the API server refuses replicas: 4"

# --- waiting for a size ------------------------------------------------------
# Ready means: the operator has seen the latest spec, every master exists, is
# Voting and caught up, all run with the expected quorum, no transition is in
# progress, and the cluster says Running and Available.
status_line() {
  kt get mmc "${MMC}" -o jsonpath='{.metadata.generation}|{.status.observedGeneration}|{.status.replicas}|{.status.readyReplicas}|{.status.quorum}|{.status.phase}|{.status.transition.to}|{.status.conditions[?(@.type=="Available")].status}|{range .status.members[*]}{.name}={.quorum} {end}'
}

# The safety invariant, checked from outside on every poll: any two quorums in
# use must intersect among the masters that exist (q1 + q2 > masters).
check_quorums_intersect() {
  local members="$1" smallest="" count=0 member quorum
  for member in ${members}; do
    quorum="${member#*=}"
    count=$((count + 1))
    [ -z "${quorum}" ] && continue
    if [ -z "${smallest}" ] || [ "${quorum}" -lt "${smallest}" ]; then smallest="${quorum}"; fi
  done
  if [ -n "${smallest}" ] && [ $((2 * smallest)) -le "${count}" ]; then
    fail "quorums may not intersect: smallest quorum ${smallest} with ${count} masters (${members})"
  fi
}

wait_ready() {
  local replicas="$1" quorum=$(( $1 / 2 + 1 ))
  local deadline=$((SECONDS + READY_TIMEOUT_S)) last="" line
  log "waiting for ${replicas} ready masters with --quorum=${quorum}"
  while :; do
    line="$(status_line 2>/dev/null || true)"
    if [ "${line}" != "${last}" ]; then
      kt get mmc "${MMC}" --no-headers 2>/dev/null || true
      last="${line}"
    fi
    IFS='|' read -r generation observed existing ready current phase transition_to available members <<<"${line}"
    check_quorums_intersect "${members:-}"
    local expected_members="" quorums_ok=1 i member
    for ((i = 0; i < replicas; i++)); do expected_members+="${MMC}-${i}=${quorum} "; done
    [ "${members:-}" = "${expected_members}" ] || quorums_ok=0
    if [ -n "${generation}" ] && [ "${generation}" = "${observed}" ] \
      && [ "${existing}" = "${replicas}" ] && [ "${ready}" = "${replicas}" ] \
      && [ "${current}" = "${quorum}" ] && [ "${phase}" = Running ] \
      && [ -z "${transition_to}" ] && [ "${available}" = True ] && [ "${quorums_ok}" = 1 ]; then
      log "ready: ${replicas} masters, --quorum=${quorum}"
      return 0
    fi
    if [ "${SECONDS}" -ge "${deadline}" ]; then
      fail "not ready with ${replicas} masters after ${READY_TIMEOUT_S}s; last status: ${line}"
    fi
    sleep "${POLL_INTERVAL_S}"
  done
}

# A removed master must be gone, not merely stopped: it may never come back.
# (Ordinals up to 8: a cluster has at most 9 masters.)
expect_no_pods_beyond() {
  local replicas="$1" ordinal
  for ((ordinal = replicas; ordinal <= 8; ordinal++)); do
    if kt get pod "${MMC}-${ordinal}" >/dev/null 2>&1; then
      fail "pod ${MMC}-${ordinal} still exists with ${replicas} masters"
    fi
  done
}

# --- the walk-through --------------------------------------------------------
log "creating MesosMasterCluster ${MMC} with 3 masters"
cat <<YAML | kt apply -f -
apiVersion: mesos.operator.dev/v1alpha1
kind: MesosMasterCluster
metadata:
  name: ${MMC}
spec:
  replicas: 3
  image: ${IMAGE}
  storage:
    size: 256Mi
YAML
wait_ready 3

log "growing to 5 masters"
kt patch mmc "${MMC}" --type merge --patch '{"spec":{"replicas":5}}'
wait_ready 5

log "shrinking to 3 masters"
kt patch mmc "${MMC}" --type merge --patch '{"spec":{"replicas":3}}'
wait_ready 3
expect_no_pods_beyond 3

kt describe mmc "${MMC}"

log "deleting MesosMasterCluster ${MMC}"
kt delete mmc "${MMC}" --wait --timeout 5m
helm uninstall mesos-operator --kube-context "${CONTEXT}" --namespace "${OPERATOR_NAMESPACE}" --wait

echo "kind end-to-end: 1 passed, 0 failed"
