#!/usr/bin/env bash
# The chart and manifest tests (tests/chart): Helm's own engine renders the chart,
# and every object is checked against the Kubernetes 1.32 schemas and the CRD.
# Works from a fresh clone: makes the virtualenv .venv if missing and installs the
# pinned requirements into it (again only when tests/chart/requirements.txt
# changes). Extra arguments go to pytest, e.g. `-k rbac`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CHART_TESTS_VENV:-.venv}"
REQUIREMENTS=tests/chart/requirements.txt
STAMP="${VENV}/.chart-tests-requirements.sha256"
PYTHON="${PYTHON:-python3}"

if ! command -v "${PYTHON}" >/dev/null 2>&1; then
  echo "chart-tests: ${PYTHON} is not installed" >&2
  exit 1
fi

# Debian splits ensurepip (which `python3 -m venv` needs) into python3-venv.
if ! "${PYTHON}" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== chart-tests: installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "chart-tests: ${PYTHON} cannot make virtualenvs; install python3-venv" >&2
    exit 1
  fi
fi

# A virtualenv whose interpreter is gone (Python upgraded underneath) is rebuilt.
if [ -d "${VENV}" ] && ! "${VENV}/bin/python" -c '' >/dev/null 2>&1; then
  echo "== chart-tests: ${VENV} is broken, recreating it"
  rm -rf "${VENV}"
fi
if [ ! -x "${VENV}/bin/python" ]; then
  echo "== chart-tests: creating ${VENV}"
  "${PYTHON}" -m venv "${VENV}"
fi

wanted="$(sha256sum "${REQUIREMENTS}" | cut -d' ' -f1)"
if [ ! -f "${STAMP}" ] || [ "$(cat "${STAMP}")" != "${wanted}" ]; then
  echo "== chart-tests: installing ${REQUIREMENTS}"
  "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check -r "${REQUIREMENTS}"
  echo "${wanted}" >"${STAMP}"
fi

echo "== chart tests (helm-python-sdk, kubernetes-validate)"
export PYTHONDONTWRITEBYTECODE=1
status=0
"${VENV}/bin/python" -m pytest tests/chart "$@" || status=$?
if [ "${status}" -eq 5 ]; then
  # pytest's "no tests collected": a broken test tree, never a pass.
  echo "chart-tests: pytest collected no tests" >&2
  exit 1
fi
exit "${status}"
