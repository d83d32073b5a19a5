#!/usr/bin/env bash
# The main job on the embedded default. Until the offline testbed lands: the sharpener self-check.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
"$PYTHON" -m sharpeners.selfcheck "$@"
