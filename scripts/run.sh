#!/usr/bin/env bash
# The main job on the embedded default: distil the guidance adapter for the offline testbed model, the setting best on
# its frontier and its controls (transformer layers, rank 8, on CFG's own sampling runs, a cfg knob over CFG scales
# 1-10 at strength ((w-1)/4)^0.5, half the samples at w = 5, 3,200 steps of 64; see README, Evidence).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
"$PYTHON" training/train.py --testbed --train adapter "$@"
