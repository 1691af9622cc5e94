#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default: a learner hub and two collectors
# playing the TextWorld game generated offline. Extra arguments go to launch.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ $# -eq 0 ]]; then set -- --max-seconds 120; fi
exec .venv/bin/python launch.py --role all "$@"
