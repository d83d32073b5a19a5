"""Lever: the CFG scale w as an input of the guidance adapter (AGD's way), against the strength map alone.

    python bench/levers/guidance_gate.py --prompt-seed 11 --prompts 500 --out outputs/lever_gate

Each LoRA's rank-r activations are scaled per sample by g(w) = s(w)·(1 + A·φ(w)), where s(w) = (w − 1)/(5 − 1) is the
knob's fixed strength map, φ(w) a Fourier embedding of w over the trained range and A a learned [r, F] table per layer
(zero at the start, so training starts from the plain strength map). Trained exactly as the main job with
--guidance-range (the trainer's loop, CFG-run inputs, 2,000 steps of 64); for one w the gated LoRA is again a plain
LoRA (up·diag(g(w))·down), so a host could load it, but only after the pack computes it for that w. Scored with
bench/controls.py's knob rows.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import Scorer, load_pack  # noqa: E402

load_pack()
from dice_pack.sharpeners.adapter import GuidanceAdapter, lora_name  # noqa: E402

FREQUENCIES = 3  # φ(w): sin and cos of k·π·u, k = 1..3, u the position of w in the trained range


class GatedAdapter(GuidanceAdapter):
    """The guidance adapter with a per-layer, per-rank gate of w; strength carries s(w), from which w is recovered."""

    low, high, reference, exponent = 1.0, 10.0, 5.0, 1.0

    def __init__(self, shapes, config) -> None:
        super().__init__(shapes, config)
        self.gates = nn.ParameterDict({name: nn.Parameter(torch.zeros(config.rank, 2 * FREQUENCIES))
                                       for name in self.layers})

    def features(self, strength: torch.Tensor) -> torch.Tensor:
        w = 1 + strength.clamp_min(0) ** (1 / self.exponent) * (self.reference - 1)
        u = (w - self.low) / (self.high - self.low)
        angles = u[:, None] * math.pi * torch.arange(1, FREQUENCIES + 1, device=u.device)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def attach(self, model: nn.Module) -> "GatedAdapter":
        self.detach()
        for path in self.paths:
            name = lora_name(path)
            self._handles.append(model.get_submodule(path).register_forward_hook(self._gated(name)))
        return self

    def _gated(self, name: str):
        lora, table = self.layers[name], self.gates[name]

        def add_delta(module, inputs, output):
            strength = self.strength
            if not torch.is_tensor(strength):
                if strength == 0:
                    return output
                strength = torch.full((len(inputs[0]),), float(strength), device=inputs[0].device)
            strength = strength.to(lora.down)
            gate = strength[:, None] * (1 + self.features(strength) @ table.T)  # [B, r]
            hidden = F.linear(inputs[0].to(lora.down.dtype), lora.down)
            hidden = hidden * gate.view(len(gate), *[1] * (hidden.ndim - 2), -1)
            return output + (F.linear(hidden, lora.up) * self.config.scale).to(output.dtype)
        return add_delta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-seed", type=int, required=True)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--scales", default="2,3,5,7,9")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default="outputs/lever_gate", help="folder for the run and the adapter's tensors")
    parser.add_argument("--baselines-from", help="bench/controls.py output to take the unguided and CFG rows from")
    parser.add_argument("--knob-exponent", type=float, default=1.0, help="the strength map s(w) the gate multiplies")
    options = parser.parse_args()
    from safetensors.torch import save_file

    import dice_pack.training.loop as loop
    from dice_pack.sharpeners.adapter import AdapterConfig
    from dice_pack.sharpeners.adapter_file import AdapterFile, AdapterInfo
    from dice_pack.training.loop import RunInfo, TrainConfig, make_batch, train
    from dice_pack.training.student import Student
    from dice_pack.training.testbed.model import Testbed

    import controls

    testbed = Testbed.load()
    GatedAdapter.exponent = options.knob_exponent
    made = {}

    def make_gated_student(config, backend, device):
        paths = backend.adapter_layers(config.adapter_layers)
        adapter = GatedAdapter.for_layers(backend.adapter_model(), paths, AdapterConfig(
            rank=config.adapter_rank, alpha=float(config.adapter_rank), layers=config.adapter_layers))
        made["adapter"] = adapter.to(device).attach(backend.adapter_model())
        return Student(None, adapter, reference_scale=config.guidance, knob_exponent=config.knob_exponent).to(device)

    loop.make_student = make_gated_student  # the trainer's loop, with this adapter in place of the plain one
    out = Path(options.out)
    config = TrainConfig(steps=options.steps, batch=64, lr=1e-3, guidance=5.0, train="adapter", adapter_layers="transformer",
                         inputs="cfg-runs", guidance_min=GatedAdapter.low, guidance_max=GatedAdapter.high,
                         knob_exponent=options.knob_exponent,
                         save_every=500, sample_every=0)
    train(config, testbed, RunInfo("testbed-minilm", "dice-testbed"), out / "run", out / "unused.safetensors",
          adapter_out=out / "lora.safetensors")
    adapter = made["adapter"]
    save_file({f"{k}.gate": v.detach().contiguous() for k, v in adapter.gates.items()}, str(out / "gates.safetensors"))

    class Gated:
        """bench/controls.py's Adapted for the gated adapter (already attached)."""

        file = AdapterFile(AdapterConfig(rank=8, alpha=8.0, layers="transformer"),
                           AdapterInfo(guidance_min=GatedAdapter.low, guidance_max=GatedAdapter.high,
                                       knob_exponent=options.knob_exponent), {}, "gated")
        partner = None

        def __init__(self) -> None:
            self.adapter = adapter
            adapter.requires_grad_(False)
            adapter.strength = 0.0

        at = controls.Adapted.at
        context = controls.Adapted.context

    scorer = Scorer(testbed, options.prompts, options.prompt_seed)
    options.scales = [float(v) for v in options.scales.split(",")]
    options.strengths, options.held_out = [], 512

    options.baselines = controls.earlier_baselines(parser, options)

    def measure(row, make_images):
        earlier = options.baselines.get(("knob", row["method"], row["w"], row["steps"]))
        row.update({k: earlier[k] for k in ("alignment", "fd")} if earlier else scorer.score(make_images()))
        print(f"{row['method']} w={row['w']} {row['steps']} steps: alignment {row['alignment']:.1f} FD {row['fd']:.1f} "
              f"ratio {row['distance_ratio']}", flush=True)
        return row

    rows = controls.knob_rows(options, testbed, scorer, [Gated()], ["adapter-gated"], measure)
    print("\n".join(controls.knob_verdicts(rows, "adapter-gated")))
    del make_batch


if __name__ == "__main__":
    main()
