#!/usr/bin/env bash
# The main job on the embedded default: distil a sharpener for the offline testbed model (about 6 min on 2 CPU cores).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
"$PYTHON" training/train.py --testbed "$@"
