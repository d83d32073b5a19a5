#!/usr/bin/env bash
# The main job on the embedded default: distil the guidance adapter for the offline testbed model, the setting best on
# its frontier and its controls (rank 8 on the transformer layers and the res-blocks' convolutions, on CFG's own
# sampling runs, a cfg knob over CFG scales 1-10 at strength ((w-1)/4)^0.5, half the samples at w = 5, 4,800 steps of
# 64; see README, Evidence, and docs/research.md for why these two flags).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
"$PYTHON" training/train.py --testbed --train adapter --adapter-layers all --steps 4800 "$@"
