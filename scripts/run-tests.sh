#!/usr/bin/env bash
# Builds every test target once, then runs the test binaries a few at a time.
#
# `cargo test` runs test binaries one after another; ours spend most of their time
# waiting on real processes, fsync and election timeouts, so two binaries side by
# side roughly halve the wall time on CI's two cores. Each binary's output is kept
# in target/test-logs/<binary>.log and printed whole when it fails.
#
#   TEST_JOBS=N   binaries run at once (default 2; 1 gives cargo test's order)
#   extra arguments go to every test binary (e.g. `--skip slow_name`)
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS="${TEST_JOBS:-2}"
# tests/masters runs every real-process test of the master (about 2 minutes on two
# cores); see target/test-logs for the others' times.
LONGEST_FIRST="${LONGEST_FIRST:-masters}"
LOGS=target/test-logs
rm -rf "${LOGS}"
mkdir -p "${LOGS}"

# Cargo prints one JSON line per artifact; the test executables are those built
# with the test profile flag set. Cargo lists them as they finish linking, so the
# biggest come last; the longest-running ones (LONGEST_FIRST, by binary name) are
# started first instead, so that no long binary runs alone at the end.
cargo test --all-targets --no-run --message-format=json-render-diagnostics \
  >"${LOGS}/build.json"
python3 - "${LOGS}/build.json" "${LONGEST_FIRST}" >"${LOGS}/binaries" <<'EOF'
import json, sys
seen = []
for line in open(sys.argv[1]):
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") != "compiler-artifact":
        continue
    if not message.get("profile", {}).get("test") or not message.get("executable"):
        continue
    if message["executable"] not in seen:
        seen.append(message["executable"])
longest_first = sys.argv[2].split()
def rank(path):
    name = path.rsplit("/", 1)[-1].rsplit("-", 1)[0]
    return longest_first.index(name) if name in longest_first else len(longest_first)
for path in sorted(seen, key=rank):
    print(path)
EOF

count="$(wc -l <"${LOGS}/binaries")"
echo "== ${count} test binaries, ${JOBS} at a time"

run_one() {
  local binary="$1"
  shift
  local name log start status
  name="$(basename "${binary}")"
  log="${LOGS}/${name}.log"
  start="$(date +%s)"
  status=0
  "${binary}" "$@" >"${log}" 2>&1 || status=$?
  local summary
  summary="$(grep -E '^test result:' "${log}" | tail -n 1 || true)"
  echo "${name}: ${summary:-no result line} ($(($(date +%s) - start)) s)"
  if [ "${status}" != 0 ]; then
    echo "---- ${name} FAILED (exit ${status}); its output:"
    cat "${log}"
    echo "---- end of ${name}"
    touch "${LOGS}/${name}.failed"
  fi
  return 0
}
export -f run_one
export LOGS

xargs -a "${LOGS}/binaries" -d '\n' -P "${JOBS}" -I {} bash -c 'run_one "$@"' _ {} "$@"

failed=("${LOGS}"/*.failed)
if [ -e "${failed[0]}" ]; then
  echo "== failed test binaries:"
  for marker in "${failed[@]}"; do
    echo "  $(basename "${marker}" .failed)"
  done
  exit 1
fi
echo "== all ${count} test binaries passed"
