#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default for 3 minutes: a learner hub, two collectors
# playing the TextWorld game generated offline, and PPO episodes on the LLM (in process with the default
# config, so the first episode is done about a minute in). The terminal shows the hub's reports; helper
# processes write to runs/<run.name>/helpers.log. Extra arguments go to launch.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ $# -eq 0 ]]; then set -- --max-seconds 180; fi
exec .venv/bin/python launch.py --role all "$@"
