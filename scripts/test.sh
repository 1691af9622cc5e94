#!/usr/bin/env bash
# Set up .venv and run the test suite. Extra arguments go to pytest:
#   bash scripts/test.sh                  # the full suite (what .ci/run runs)
#   bash scripts/test.sh -m "not slow"    # the fast tier, under 3 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
