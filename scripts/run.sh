#!/usr/bin/env bash
# The main job on the embedded default: distil the guidance adapter for the offline testbed model, the setting best on
# its frontier (transformer layers, rank 8, on CFG's own sampling runs; see README, Evidence).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
"$PYTHON" training/train.py --testbed --train adapter "$@"
