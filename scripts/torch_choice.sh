# Sourced by scripts/setup.sh (and tests/test_setup_scripts.py): which builds of torch and vLLM a host gets.
#   source scripts/torch_choice.sh
#   pzstream_accel          # prints "cuda" or "cpu"; exit status 2 on a bad PZSTREAM_ACCEL
#   pzstream_accel_reason   # prints why, e.g. "nvidia-smi lists 1 GPU"
#   pzstream_setup_key cpu  # the .venv key: hash of the dependency spec and the choice
# A host "has CUDA" when `nvidia-smi -L` exits 0 and prints at least one line starting "GPU ".
# PZSTREAM_ACCEL=cuda|cpu|auto (default auto) overrides the detection.

_PZSTREAM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# prints "<choice>\t<reason>"
_pzstream_accel_detect() {
  local want="${PZSTREAM_ACCEL:-auto}" listing n
  case "$want" in
    cuda|cpu) printf '%s\tPZSTREAM_ACCEL=%s\n' "$want" "$want"; return 0 ;;
    auto|"") ;;
    *) echo "pzstream: PZSTREAM_ACCEL must be cuda, cpu or auto, not '$want'" >&2; return 2 ;;
  esac
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    printf 'cpu\tno nvidia-smi on PATH\n'; return 0
  fi
  if ! listing="$(nvidia-smi -L 2>/dev/null)"; then
    printf 'cpu\tnvidia-smi -L failed\n'; return 0
  fi
  n="$(grep -c '^GPU ' <<<"$listing" || true)"
  if [[ "${n:-0}" -ge 1 ]]; then
    printf 'cuda\tnvidia-smi lists %s GPU%s\n' "$n" "$([[ $n -gt 1 ]] && echo s)"
  else
    printf 'cpu\tnvidia-smi lists no GPU\n'
  fi
}

pzstream_accel() {
  local out
  out="$(_pzstream_accel_detect)" || return $?
  printf '%s\n' "${out%%$'\t'*}"
}

pzstream_accel_reason() {
  local out
  out="$(_pzstream_accel_detect)" || return $?
  printf '%s\n' "${out#*$'\t'}"
}

# The .venv key: the files that decide what setup.sh installs, plus the accelerator choice, so a
# .venv built for cpu is rebuilt on a CUDA host (and back).
pzstream_setup_key() {
  local accel="${1:?pzstream_setup_key needs cuda or cpu}"
  { cat "$_PZSTREAM_ROOT/pyproject.toml" "$_PZSTREAM_ROOT/requirements-spacy.txt" \
        "$_PZSTREAM_ROOT/scripts/setup.sh" "$_PZSTREAM_ROOT/scripts/torch_choice.sh"
    printf 'accel=%s\n' "$accel"; } | sha256sum | cut -c1-16
}
