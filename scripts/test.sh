#!/usr/bin/env bash
# Run the test suite. With COMFYUI_PATH set, the real-host tests run too (see README).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
"$PYTHON" -m pytest "$@"
