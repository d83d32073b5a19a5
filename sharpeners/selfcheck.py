"""Self-check of the sharpener core: build, save, reload, sharpen; prints what it measured.

    python -m sharpeners.selfcheck
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from . import Sharpener, TrainingInfo, load_sharpener, negative_shift, save_sharpener, sharpen


def median_seconds(function, repeats: int = 20) -> float:
    """Median wall time of function() over repeats, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    torch.manual_seed(0)
    network = Sharpener()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "selfcheck.safetensors"
        save_sharpener(path, network, TrainingInfo(base_checkpoint="selfcheck"))
        loaded = load_sharpener(path)
        size = path.stat().st_size
    c, c_ref = torch.randn(1, 77, 768), torch.randn(1, 77, 768)
    same_weights = all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), loaded.network.state_dict().values()))
    identity = torch.equal(sharpen(loaded.network, c, c_ref, 0.0), c)
    moved = (sharpen(loaded.network, c, c_ref, 1.0) - c).norm() / c.norm()
    long_prompt = sharpen(loaded.network, torch.randn(1, 154, 768), c_ref, 1.0).shape[1]
    shifted = negative_shift(torch.randn(1, 154, 768), torch.randn(1, 231, 768), c_ref, 0.5).shape[1]
    figures = {
        "parameters": network.parameter_count(),
        "file_bytes": size,
        "reload_exact": same_weights,
        "alpha0_identity": identity,
        "alpha1_relative_change": round(float(moved), 4),
        "long_prompt_tokens": long_prompt,
        "negative_shift_tokens": shifted,
        "sharpen_ms_cpu_77_tokens": round(1000 * median_seconds(lambda: sharpen(loaded.network, c, c_ref, 1.0)), 3),
    }
    print(f"sharpener: {figures['parameters']:,} parameters, {figures['file_bytes']:,} bytes as safetensors")
    print(f"reload exact: {same_weights}; alpha=0 gives c back: {identity}; alpha=1 moves c by "
          f"{figures['alpha1_relative_change']:.1%} (random weights)")
    print(f"154-token prompt stays {long_prompt} tokens; negative shift of 154 against 231 tokens gives {shifted}")
    print(f"sharpening one 77-token prompt on this CPU: {figures['sharpen_ms_cpu_77_tokens']} ms (median of 20)")
    print(json.dumps(figures))
    if not (same_weights and identity and long_prompt == 154 and shifted == 462):
        raise SystemExit("self-check FAILED")


if __name__ == "__main__":
    main()
