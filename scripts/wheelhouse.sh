#!/usr/bin/env bash
# Build an offline bundle of pzstream for a host WITHOUT internet that already has Python, torch
# and transformers. Run it where there is internet (and this checkout's .venv, for the default game);
# copy OUT_DIR over; there run `bash scripts/offline_install.sh OUT_DIR`.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash scripts/wheelhouse.sh [OUT_DIR] [--python 3.12] [--with-ray-vllm] [--force]

Builds OUT_DIR (default ./pzstream-wheelhouse) for an offline Linux x86_64 host that already has
CPython (default 3.12), torch and transformers:
  * wheels (manylinux / pure Python, for that CPython) of what pzstream needs beyond torch and
    transformers: pyzmq, msgspec, msgpack, pydantic, textworld, spaCy, tensorboard, ... and their deps;
  * wheels built here: pzstream itself, DeepSpeed (DS_BUILD_OPS=0, pure Python), Jericho (sdist
    on PyPI; its frotz library is loaded through ctypes, so the wheel is py3-none-any, x86_64 Linux);
  * spaCy's English pipeline per requirements-spacy.txt (hash-checked), LightZero (if a wheel exists);
  * games/: the default TextWorld game, generated here;
  * MANIFEST.txt: every file's sha256, size and name (offline_install.sh checks it).
Left out on purpose (the host has them): torch, transformers and their dependencies
(see EXCLUDE in this script). Ray and vLLM (several GB) only with --with-ray-vllm.

  --python X.Y      CPython version of the offline host (default 3.12)
  --with-ray-vllm   also bundle ray==2.60.0 and vllm==0.32.0 (CUDA build) with their deps
  --force           empty OUT_DIR first if it is not empty
  -h, --help        this text
Environment: PYTHON = the interpreter that runs pip and generates the game (default .venv/bin/python).
EOF
}

die() { echo "wheelhouse: error: $*" >&2; exit 2; }

OUT="" PYVER="3.12" WITH_RAY_VLLM=0 FORCE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --python) [[ $# -ge 2 ]] || die "--python needs a version, e.g. --python 3.12"; PYVER="$2"; shift 2 ;;
    --python=*) PYVER="${1#*=}"; shift ;;
    --with-ray-vllm) WITH_RAY_VLLM=1; shift ;;
    --force) FORCE=1; shift ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [[ -z "$OUT" ]] || die "one OUT_DIR only (got '$OUT' and '$1')"; OUT="$1"; shift ;;
  esac
done
[[ "$PYVER" =~ ^3\.[0-9]+$ ]] || die "--python wants a CPython version like 3.12, not '$PYVER'"
OUT="${OUT:-pzstream-wheelhouse}"

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)" || die "no python3 to run pip with"
if [[ -e "$OUT" && ! -d "$OUT" ]]; then die "'$OUT' exists and is not a directory"; fi
if [[ -d "$OUT" && -n "$(ls -A "$OUT")" ]]; then
  [[ "$FORCE" == 1 ]] || die "'$OUT' is not empty; remove it or pass --force"
  rm -rf "${OUT:?}"/*
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# What an offline host with torch and transformers already has: never bundled (names as pip
# normalises them; a trailing * matches a prefix).
EXCLUDE=(
  torch triton "nvidia-*" "cuda-*" setuptools sympy mpmath networkx jinja2 markupsafe
  filelock fsspec typing-extensions
  transformers tokenizers huggingface-hub hf-xet safetensors regex tqdm requests urllib3 idna
  certifi charset-normalizer packaging pyyaml numpy
)
VLLM_REQ="vllm==0.32.0"  # pins torch==2.13.0, like scripts/setup.sh on a CUDA host
RAY_REQ="ray==2.60.0"
PLATFORM=(--only-binary=:all: --python-version "$PYVER" --implementation cp
          --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform linux_x86_64)
PIPQ=("$PY" -m pip --disable-pip-version-check)
step() { echo "wheelhouse: $*" >&2; }
WARNINGS=()

step "target CPython $PYVER, Linux x86_64; bundle in $OUT (pip from $("$PY" --version))"

# 1. wheels built here
LOCAL="$WORK/local"; mkdir -p "$LOCAL"
step "building pzstream's wheel"
mkdir -p "$WORK/src"
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/pzstream" "$WORK/src/"  # a copy: no build/ in the checkout
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
"${PIPQ[@]}" wheel --quiet --no-deps -w "$LOCAL" "$WORK/src"
step "building DeepSpeed's wheel (DS_BUILD_OPS=0: no compiled ops, pure Python)"
DS_BUILD_OPS=0 "${PIPQ[@]}" wheel --quiet --no-deps -w "$LOCAL" "deepspeed==0.19.8" \
  || { WARNINGS+=("DeepSpeed's wheel did not build: left out"); step "${WARNINGS[-1]}"; }
JERICHO_REQ="$(grep -o '"jericho==[^"]*"' "$REPO/pyproject.toml" | tr -d '"')"
step "building Jericho's wheel ($JERICHO_REQ, from its sdist)"
"${PIPQ[@]}" wheel --quiet --no-deps -w "$LOCAL" "$JERICHO_REQ" \
  || { WARNINGS+=("Jericho's wheel did not build: left out"); step "${WARNINGS[-1]}"; }
for w in "$LOCAL"/*.whl; do
  case "$(basename "$w")" in
    *-py3-none-any.whl|*-py2.py3-none-any.whl) ;;
    *) WARNINGS+=("$(basename "$w") is not py3-none-any: it may not install on CPython $PYVER") ;;
  esac
done
cp "$LOCAL"/*.whl "$OUT/"

# 2. the rest: resolve for the target, drop what the host has, download the remainder
TOP=()
for w in "$LOCAL"/*.whl; do
  n="$(basename "$w" | cut -d- -f1 | tr '_' '-')"; TOP+=("$n")
done
[[ "$WITH_RAY_VLLM" == 1 ]] && TOP+=("$RAY_REQ" "$VLLM_REQ")
step "resolving ${TOP[*]} for CPython $PYVER"
"${PIPQ[@]}" install --quiet --dry-run --ignore-installed --report "$WORK/report.json" \
  --target "$WORK/unused" "${PLATFORM[@]}" --find-links "$LOCAL" "${TOP[@]}"
"$PY" - "$WORK/report.json" "$WORK/pins.txt" "$LOCAL" "${EXCLUDE[@]}" <<'PYEOF'
import fnmatch, json, os, re, sys
from urllib.parse import unquote, urlparse
report, out, local, excl = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
keep, dropped = [], []
for item in json.load(open(report))["install"]:
    name, ver = norm(item["metadata"]["name"]), item["metadata"]["version"]
    url = urlparse(item["download_info"]["url"])
    if url.scheme == "file" and os.path.dirname(unquote(url.path)) == local:
        continue  # built here (a file: URL elsewhere is a local mirror in pip's config: downloaded)
    (dropped if any(fnmatch.fnmatch(name, e) for e in excl) else keep).append(f"{name}=={ver}")
open(out, "w").write("".join(p + "\n" for p in keep))
print(f"wheelhouse: {len(keep)} to download; left out (the host has them): {' '.join(sorted(dropped))}",
      file=sys.stderr)
PYEOF
if [[ -s "$WORK/pins.txt" ]]; then
  step "downloading $(wc -l < "$WORK/pins.txt") wheels"
  "${PIPQ[@]}" download --quiet --no-deps "${PLATFORM[@]}" -d "$OUT" -r "$WORK/pins.txt"
fi

# 3. spaCy's pipeline (hash-pinned) and LightZero (installed --no-deps, as scripts/setup.sh does)
step "downloading spaCy's English pipeline (requirements-spacy.txt, hash-checked)"
"${PIPQ[@]}" download --quiet --no-deps --require-hashes "${PLATFORM[@]}" -d "$OUT" -r "$REPO/requirements-spacy.txt"
step "downloading LightZero (installed --no-deps)"
"${PIPQ[@]}" download --quiet --no-deps "${PLATFORM[@]}" -d "$OUT" "lightzero==0.2.0" \
  || { WARNINGS+=("no LightZero wheel for CPython $PYVER: left out (the numpy search backend still works)"); step "${WARNINGS[-1]}"; }

# 4. the default game, generated here (TextWorld's generator needs no network)
step "generating the default TextWorld game"
mkdir -p "$OUT/games"
if "$PY" - "$REPO" "$WORK/cache" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
from pzstream.env.sources import ensure_default_game
print("wheelhouse: default game:", ensure_default_game(sys.argv[2]), file=sys.stderr)
PYEOF
then
  cp -r "$WORK/cache/games/"tw-default-* "$OUT/games/"
  cat > "$OUT/games/WHERE.txt" <<'EOF'
offline_install.sh copies these directories into <cache dir>/games/, where pzstream looks for the
default game ("default" / "tw-default"): <cache dir> is --cache-dir, else $PZSTREAM_CACHE_DIR, else
~/.cache/pzstream. A run with env.cache_dir set in its config looks in <env.cache_dir>/games/ instead.
EOF
else
  WARNINGS+=("the default game could not be generated (needs textworld and pzstream importable by $PY): no games/")
  step "${WARNINGS[-1]}"
  rmdir "$OUT/games" 2>/dev/null || true
fi

# 5. what the bundle is for, and its manifest
{ echo "python=$PYVER"; echo "platform=linux_x86_64"; echo "top=${TOP[*]%%==*}"
  echo "nodeps=lightzero"; } > "$OUT/bundle-info.txt"
( cd "$OUT"
  { echo "# pzstream offline bundle: sha256  size  file (checked by scripts/offline_install.sh)"
    find . -type f ! -name MANIFEST.txt | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r f; do
      printf '%s  %s  %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"
    done; } > MANIFEST.txt )

n_whl="$(find "$OUT" -maxdepth 1 -name '*.whl' | wc -l)"
for w in "${WARNINGS[@]}"; do echo "wheelhouse: warning: $w" >&2; done
echo "wheelhouse: $n_whl wheels, total $(du -sh "$OUT" | cut -f1) ($(du -sb "$OUT" | cut -f1) bytes) in $OUT"
