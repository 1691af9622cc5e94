#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default for 3 minutes: a learner hub, two collectors
# playing the TextWorld game generated offline, and PPO episodes on the LLM. Extra arguments go to launch.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ $# -eq 0 ]]; then set -- --max-seconds 180; fi
exec .venv/bin/python launch.py --role all "$@"
