#!/usr/bin/env bash
# The test run behind `make test` (and its parts: `make lint|sanity|unit|integration|molecule`).
# Static checks, ansible-test sanity and molecule scenarios are wrapped as tests under tests/lint
# and tests/molecule and show their full output when they fail. The full run is five pytest
# sessions in parallel (scripts/test_lanes.py) and ends with their merged summary line.
#   scripts/run-tests.sh             everything: lint, sanity, unit, integration, molecule, as five pytest sessions
#                                    in parallel (scripts/test_lanes.py), ending in one merged summary line
#   scripts/run-tests.sh ARGS...     passed to pytest (e.g. -m lint, tests/unit -k sandbox)
set -Eeuo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
export ANSIBLE_CONFIG=$PWD/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH=$PWD/.build/collections
mkdir -p tests/output
if [ $# -eq 0 ]; then
  exec python scripts/test_lanes.py
fi
rc=0
python -m pytest -p no:cacheprovider --durations=25 --junitxml=tests/output/junit.xml "$@" || rc=$?
# pytest exits 5 when it selected no test: that is a failure of the run, not a pass.
exit $rc
