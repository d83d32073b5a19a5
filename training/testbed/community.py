"""Community variants of the testbed, made the way community checkpoints are made, so that transfer can be measured.

    python -m training.testbed.community        # about 10 min on 2 CPU cores; writes training/testbed/community/

- finetune: the testbed's UNet continued on images in the "bright" style (where a caption leaves the background
  open, white 85 % of the time rather than a third), as DreamShaper continues SD1.5 on its own pictures;
- merge: ComfyUI's ModelMergeSimple of finetune and the base at ratio 0.5;
- style: a rank-8 LoRA for the base in kohya's layout (the guidance adapter's), trained on the same pictures with the
  base frozen; base+style is the base with it at strength 1, as a user's own LoRA.

The style score (training.testbed.evaluator.style_score) is how often an open background comes out white. Each variant
gets its config and a model card with its figures; the committed files are fp16, as the testbed's own.
"""
from __future__ import annotations

if __name__ == "__main__" and __package__ == "training.testbed":
    import runpy

    from training.train import load_pack

    load_pack()
    runpy.run_module("dice_pack.training.testbed.community", run_name="__main__")
    raise SystemExit(0)

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ...sharpeners.adapter import AdapterConfig, GuidanceAdapter, lora_name
from ...sharpeners.safefile import write_safetensors
from .build import CONFIG, build_text, fit_denoiser, save_atomic, unet_noising
from .data import STYLES, make_dataset
from .evaluator import alignment, style_score
from .features import frechet_distance, image_features
from .model import WEIGHTS, Testbed, evaluation_prompts
from .text_encoder import TextEncoder

COMMUNITY = Path(__file__).resolve().parent / "community"
STYLE = "bright"
VARIANTS = ("base", "finetune", "merge", "base+style")
SETTINGS = {
    "seed": 4242, "train_images": 24000, "images_per_caption": 4, "caption_dropout": 0.1, "style": STYLE,
    "finetune_steps": 1200, "finetune_batch": 128, "finetune_lr": 5e-4, "finetune_warmup": 50,
    "lora_rank": 8, "lora_layers": "transformer", "lora_steps": 1200, "lora_batch": 128, "lora_lr": 2e-3,
    "lora_warmup": 50, "ema_decay": 0.995, "merge_ratio": 0.5, "eval_prompts": 1000, "eval_seed": 1234,
    "eval_steps": 20, "eval_cfg": 5.0,
}


def variant_folder(name: str, root: Path = COMMUNITY) -> Path:
    """Where a variant's files are (under root, the committed folder by default): the testbed's own weights for the
    base, the style LoRA's folder for base+style."""
    if name not in VARIANTS:
        raise SystemExit(f"unknown testbed variant {name!r}: one of {', '.join(VARIANTS)}")
    return WEIGHTS if name == "base" else root / name.replace("base+", "")


def variant_weights(name: str, root: Path = COMMUNITY) -> Path:
    """The file that makes the variant what it is (its sha256 names it in a trained file's metadata)."""
    return variant_folder(name, root) / ("style_lora.safetensors" if name == "base+style" else "unet.safetensors")


def load_variant(name: str, root: Path = COMMUNITY) -> Testbed:
    """The testbed as the variant: its own UNet, or the base with the style LoRA merged in at strength 1 (as ComfyUI
    patches a LoRA into the weights)."""
    weights = variant_weights(name, root)
    if not weights.exists():
        raise SystemExit(f"{weights}: the {name} variant is not built; run python -m training.testbed.community")
    if name != "base+style":
        return Testbed.load(weights.parent)
    testbed = Testbed.load(WEIGHTS)
    merge_lora(testbed.unet, load_file(weights))
    return testbed


MIX_PREFIX = "dice-testbed-mix-"  # the base_checkpoint of an adapter trained on a mix of the variants


def mix_checkpoint_name(names: list[str]) -> str:
    """The name an adapter trained on a mix of these variants records as its checkpoint (dice-testbed-mix-base-finetune)."""
    return MIX_PREFIX + "-".join(name.replace("base+", "") for name in names)


def mixed_variants(checkpoint_name: str) -> list[str] | None:
    """The variants behind a mix_checkpoint_name, or None for an adapter trained on one model."""
    if not checkpoint_name.startswith(MIX_PREFIX):
        return None
    return [{"style": "base+style"}.get(part, part) for part in checkpoint_name[len(MIX_PREFIX):].split("-")]


class VariantMix:
    """Several UNet variants as one training model, for an adapter meant for the whole family: training step k runs
    on variant k mod n (their layouts are the same, so one adapter fits all), so a resumed run sees what an
    uninterrupted one would. Everything but the UNet's weights is the first variant's (the variants share it)."""

    def __init__(self, names: list[str], root: Path = COMMUNITY) -> None:
        models = [load_variant(name, root) for name in names]
        self.names, self.testbed, self.current = list(names), models[0], 0
        self.weights = [{k: v.detach().clone() for k, v in model.unet.state_dict().items()} for model in models]

    def __getattr__(self, name: str):
        return getattr(self.testbed, name)

    def at_step(self, step: int) -> None:
        """Put the variant of training step step into the UNet, in place (the adapter's hooks stay on its layers)."""
        index = step % len(self.names)
        if index != self.current:
            self.testbed.unet.load_state_dict(self.weights[index])
            self.current = index


@torch.no_grad()
def merge_lora(model: torch.nn.Module, tensors: dict[str, torch.Tensor], strength: float = 1.0) -> None:
    """Add a kohya-layout LoRA's deltas (strength · alpha/rank · up @ down) into model's linear layers."""
    paths = {lora_name(path): path for path, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    for key in (k for k in tensors if k.endswith(".lora_down.weight")):
        name = key[: -len(".lora_down.weight")]
        if name not in paths:
            raise ValueError(f"LoRA layer {name} is not a linear layer of this model")
        down, up = tensors[key].float(), tensors[f"{name}.lora_up.weight"].float()
        alpha = float(tensors.get(f"{name}.alpha", torch.tensor(float(len(down)))))
        layer = model.get_submodule(paths[name])
        layer.weight += (strength * alpha / len(down)) * (up @ down).to(layer.weight)


def merge_simple(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], ratio: float) -> dict:
    """ComfyUI's ModelMergeSimple: ratio of the first model and 1 − ratio of the second, weight by weight."""
    return {k: ratio * first[k].float() + (1 - ratio) * second[k].float() for k in first}


def style_data(work: Path, base: Testbed, encoder: TextEncoder, settings: dict):
    """Latents of the style's pictures (the base's autoencoder, as a fine-tune keeps SD's VAE), their captions'
    embeddings (the empty prompt's last) and each picture's caption index."""
    images, captions, _, _ = make_dataset(settings["train_images"], settings["seed"], settings["images_per_caption"],
                                          style=settings["style"])
    latents = torch.cat([base.encode_images(images[i:i + 1000]) for i in range(0, len(images), 1000)])
    embeddings, caption_index = build_text(work, captions, encoder, dict(CONFIG, **settings))
    return latents, embeddings, caption_index


def finetune(data, settings: dict) -> dict[str, torch.Tensor]:
    """The base UNet, every weight trained on the style's pictures; returns its fp32 state."""
    unet = Testbed.load(WEIGHTS).unet.requires_grad_(True).train()
    torch.manual_seed(settings["seed"])
    fit_denoiser(unet, unet, unet_noising, *data, settings, "finetune")
    return {k: v.detach() for k, v in unet.state_dict().items()}


def train_style_lora(data, settings: dict) -> GuidanceAdapter:
    """A LoRA on the base's transformer layers (the adapter's layers), trained on the style's pictures, base frozen."""
    base = Testbed.load(WEIGHTS)
    torch.manual_seed(settings["seed"])
    lora = GuidanceAdapter.for_layers(base.unet, base.adapter_layers(settings["lora_layers"]), AdapterConfig(
        rank=settings["lora_rank"], alpha=float(settings["lora_rank"]), layers=settings["lora_layers"]))
    lora.attach(base.unet)
    fit_denoiser(base.unet, lora, unet_noising, *data, settings, "lora")
    lora.detach()
    return lora


def evaluate(testbed: Testbed, style: str, settings: dict) -> dict:
    """Unguided and CFG at 20 steps: alignment, FD against real pictures in style, style score."""
    count = settings["eval_prompts"]
    captions, named, _ = evaluation_prompts(count, settings["eval_seed"])
    real = make_dataset(max(count, 5000), settings["eval_seed"] + 1, style=style)[0]
    real_features = image_features(testbed.features, real)
    context, seeds = testbed.encode_prompts(captions), list(range(count))
    styled, _, styled_named, _ = make_dataset(count, settings["eval_seed"] + 2, style=style)
    figures = {"real_style_score": round(style_score(styled, styled_named), 1)}
    for name, scale in (("unguided", 1.0), (f"cfg{settings['eval_cfg']:g}", settings["eval_cfg"])):
        images = testbed.generate(context, seeds, steps=settings["eval_steps"], cfg_scale=scale)
        figures[name] = {"alignment": round(alignment(images, named), 1),
                         "fd": round(frechet_distance(image_features(testbed.features, images), real_features), 1),
                         "style": round(style_score(images, named), 1)}
    return figures


def write_card(folder: Path, name: str, text: str, figures: dict, settings: dict) -> None:
    rows = "\n".join(f"| {method} | {f['alignment']:.1f} | {f['fd']:.1f} | {f['style']:.1f} |"
                     for method, f in figures.items() if isinstance(f, dict))
    card = (f"# Testbed community variant: {name}\n\n{text}\n\nMade by `python -m training.testbed.community` "
            f"({platform.machine()}, torch {torch.__version__}); settings in `config.json`.\n\n"
            f"On {settings['eval_prompts']} held-out prompts (seed {settings['eval_seed']}), DPM-Solver++(2M), "
            f"{settings['eval_steps']} steps; FD against real pictures in the variant's style; style: how often an "
            f"open background comes out white (real {STYLE} pictures: {figures['real_style_score']:.1f} %, plain "
            f"ones about 33 %).\n\n| sampling | alignment % | FD | style % |\n|---|---|---|---|\n{rows}\n")
    (folder / "model_card.md").write_text(card)


def main() -> None:
    parser = argparse.ArgumentParser(description="Make the testbed's community variants (fine-tune, merge, style LoRA).")
    parser.add_argument("--work", default="runs/testbed_community", help="cached text embeddings")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="a tiny run to check the pipeline, into --out")
    parser.add_argument("--out", default=str(COMMUNITY), help="where the variants go (default: the committed folder)")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    settings = dict(SETTINGS)
    if options.quick:
        settings.update(train_images=400, finetune_steps=3, lora_steps=3, finetune_batch=8, lora_batch=8,
                        eval_prompts=16, finetune_warmup=1, lora_warmup=1)
    out, work = Path(options.out), Path(options.work)
    work.mkdir(parents=True, exist_ok=True)
    started, timings = time.time(), {}
    encoder = TextEncoder()
    base = Testbed.load(WEIGHTS)
    data = style_data(work, base, encoder, settings)
    timings["data"] = round(time.time() - started, 1)

    begun = time.time()
    tuned = finetune(data, settings)
    timings["finetune"] = round(time.time() - begun, 1)
    base_state = {k: v.float() for k, v in base.unet.state_dict().items()}
    merged = merge_simple(tuned, base_state, settings["merge_ratio"])
    base_config = json.loads((WEIGHTS / "config.json").read_text())
    for name, state in (("finetune", tuned), ("merge", merged)):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        save_atomic({k: v.half() for k, v in state.items()}, folder / "unet.safetensors")
        (folder / "config.json").write_text(json.dumps({**base_config, "community": {"variant": name, **settings}},
                                                       indent=2) + "\n")

    begun = time.time()
    lora = train_style_lora(data, settings)
    timings["style_lora"] = round(time.time() - begun, 1)
    style_lora = variant_weights("base+style", out)
    style_lora.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(style_lora, {k: v.half() if v.ndim else v for k, v in lora.lora_tensors().items()},
                      {"kind": "dice-testbed-style-lora", "style": STYLE, "rank": str(settings["lora_rank"]),
                       "layers": settings["lora_layers"], "key_format": "kohya-lora-unet"})
    (style_lora.parent / "config.json").write_text(json.dumps({"community": {"variant": "style", **settings}}, indent=2) + "\n")

    texts = {
        "finetune": f"The testbed's UNet continued for {settings['finetune_steps']} steps of {settings['finetune_batch']} "
                    f"(lr {settings['finetune_lr']:g}, EMA {settings['ema_decay']}) on {settings['train_images']:,} "
                    f"pictures in the {STYLE} style: where a caption leaves the background open it is white "
                    f"{STYLES[STYLE][1]:.0%} of the time.",
        "merge": f"ModelMergeSimple of the fine-tune and the base at ratio {settings['merge_ratio']}, weight by weight.",
        "style": f"A rank-{settings['lora_rank']} LoRA on the base's {settings['lora_layers']} layers (kohya's layout, "
                 f"the guidance adapter's), {settings['lora_steps']} steps of {settings['lora_batch']} on the same "
                 f"pictures with the base frozen; the figures are the base with it at strength 1 (base+style).",
    }
    summary = {"timings_seconds": timings}
    for name in ("finetune", "merge", "base+style"):
        folder = variant_folder(name, out)
        figures = evaluate(load_variant(name, out), STYLE, settings)
        write_card(folder, name, texts[name.replace("base+", "")], figures, settings)
        summary[name] = figures
        print(f"[community] {name}: {json.dumps(figures)}", flush=True)
    summary["base"] = evaluate(base, "plain", settings)
    summary["seconds"] = round(time.time() - started, 1)
    (out / "figures.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
