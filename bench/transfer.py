"""One adapter for a model family: the base testbed's guidance adapter on its community variants.

    python bench/transfer.py --prompt-seed 2026 --prompts 1000
    python bench/transfer.py --prompt-seed 11 --prompts 500 --own finetune=outputs/adapter_finetune.safetensors

For each model (base; finetune, merge and base+style from `python -m training.testbed.community`): unguided sampling
(20 steps), CFG at w = 5 (20 steps, 40 calls; and 10 steps, 20 calls), the base's adapter (adapter_base, 20 calls, at
the strength its knob gives for w = 5) and, where a file is given or found, an adapter trained on that model
(adapter_own; `train.py --testbed <model> --train adapter`), the base's adapter fine-tuned on that model
(adapter_base_tuned; the same with `--init-adapter` and fewer steps), and an adapter trained on a mix of the variants
(adapter_mix, `--mix FILE`; `train.py --testbed base,finetune --train adapter`; the verdicts say which models it saw).
Alignment, FD against real pictures in the model's own style, and the style score (how often an open background comes
out white; null on the base, which has no style). All DPM-Solver++(2M). Prints a table, the bar's verdicts and, on its
last line, one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import Scorer, closure, load_pack

PACK_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADAPTER = PACK_ROOT / "outputs" / "testbed_adapter.safetensors"
MODELS = ("base", "finetune", "merge", "base+style")
GUIDANCE = 5.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-seed", type=int, required=True, help="seed that draws the held-out prompts")
    parser.add_argument("--prompts", type=int, default=1000, help="held-out prompts")
    parser.add_argument("--adapter", default=str(DEFAULT_ADAPTER), help="the base's guidance adapter (default: the one "
                        "bash scripts/run.sh writes)")
    parser.add_argument("--own", action="append", default=[], metavar="MODEL=FILE", help="an adapter trained on MODEL "
                        "(repeatable; default outputs/testbed_<model>_adapter.safetensors, which train.py --testbed <model> --train adapter writes, where it exists)")
    parser.add_argument("--tuned", action="append", default=[], metavar="MODEL=FILE", help="the base's adapter fine-tuned "
                        "on MODEL (train.py --testbed MODEL --train adapter --init-adapter <base's> --steps N; "
                        "repeatable), its rows adapter_base_tuned")
    parser.add_argument("--mix", help="an adapter trained on a mix of the variants (train.py --testbed base,finetune "
                        "--train adapter), its rows adapter_mix on every model")
    parser.add_argument("--models", default=",".join(MODELS), help="models to score, comma-separated")
    options = parser.parse_args()
    options.models = [m for m in options.models.split(",") if m]
    for model in options.models:
        if model not in MODELS:
            parser.error(f"--models: unknown model {model!r}; one of {', '.join(MODELS)}")
    if not Path(options.adapter).exists():
        parser.error(f"--adapter {options.adapter}: no such file; run bash scripts/run.sh first")
    if options.mix and not Path(options.mix).exists():
        parser.error(f"--mix {options.mix}: no such file")
    own, options.tuned = model_files(parser, "--own", options.own), model_files(parser, "--tuned", options.tuned)
    for model in MODELS:
        found = PACK_ROOT / "outputs" / f"testbed_{model.replace('+', '_')}_adapter.safetensors"
        if model not in own and model != "base" and found.exists():
            own[model] = str(found)
    options.own = own
    return options


def model_files(parser, flag: str, given: list[str]) -> dict[str, str]:
    """{model: file} of a repeatable MODEL=FILE option, each file checked to exist."""
    files = {}
    for text in given:
        model, _, path = text.partition("=")
        if model not in MODELS or not path:
            parser.error(f"{flag} {text}: give MODEL=FILE with MODEL one of {', '.join(MODELS)}")
        if not Path(path).exists():
            parser.error(f"{flag} {text}: no such file")
        files[model] = path
    return files


class StyledScorer(Scorer):
    """The held-out prompts' alignment, FD against real pictures in a style, and the style score."""

    def __init__(self, testbed, count: int, prompt_seed: int, style: str | None) -> None:
        super().__init__(testbed, count, prompt_seed)
        self.style = style
        if style:
            from dice_pack.training.testbed.data import make_dataset
            from dice_pack.training.testbed.features import image_features

            # The same prompts' count of real pictures (at least 5,000), drawn in the style, as FD's reference.
            real = make_dataset(max(count, 5000), prompt_seed, style=style)[0]
            self.real_features = image_features(testbed.features, real)

    def score(self, images) -> dict:
        from dice_pack.training.testbed.evaluator import style_score

        figures = super().score(images)
        style = style_score(images, self.named[:self.count], self.style) if self.style else None
        return {**figures, "style": None if style is None else round(style, 1)}


def mixed_models(path: str) -> list[str]:
    """The models a mix adapter was trained on, from the name train.py gives it (dice-testbed-mix-base-finetune)."""
    from dice_pack.sharpeners.adapter_file import load_adapter
    from dice_pack.training.testbed.community import mixed_variants

    name = load_adapter(path).info.base_checkpoint
    variants = mixed_variants(name)
    if variants is None:
        raise SystemExit(f"--mix {path}: was trained on {name}, not on a mix of the testbed's variants")
    return variants


def verdicts(rows: list[dict], mixed: list[str] = ()) -> list[str]:
    """The issue's bar: the base's adapter on each variant closes 85 % of that model's CFG gain at 20 calls with FD no
    worse than its CFG at 10 steps; with the style LoRA its style score is 90 % of CFG's at least."""
    table = {(r["model"], r["method"], r["steps"]): r for r in rows}
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for method in ("adapter_base", "adapter_own", "adapter_base_tuned", "adapter_mix"):
            ours = table.get((model, method, 20))
            unguided, cfg, half = (table.get((model, m, s)) for m, s in (("unguided", 20), ("cfg", 20), ("cfg", 10)))
            if not (ours and unguided and cfg and half):
                continue
            closed = closure(ours["alignment"], unguided["alignment"], cfg["alignment"])
            met = closed >= 0.85 and ours["fd"] <= half["fd"]
            seen = f" ({'seen' if model in mixed else 'not seen'} in its training)" if method == "adapter_mix" else ""
            line = (f"{model}, {method}{seen}: {closed:.0%} of CFG's alignment gain ({unguided['alignment']:.1f} → "
                    f"{cfg['alignment']:.1f}; {ours['alignment']:.1f}), FD {ours['fd']:.1f} vs CFG-10 {half['fd']:.1f}")
            if ours["style"] is not None and cfg["style"]:
                kept = ours["style"] / cfg["style"]
                met = met and (kept >= 0.9 or model != "base+style")
                line += f", style {ours['style']:.1f} vs CFG {cfg['style']:.1f} ({kept:.0%})"
            lines.append(f"{line}: {'met' if met else 'NOT met'}")
    return lines


def main() -> None:
    options = parse_args()
    load_pack()
    from dice_pack.training.testbed.community import load_variant

    from controls import Adapted

    mixed = mixed_models(options.mix) if options.mix else []
    rows = []
    for model in options.models:
        testbed = load_variant(model)
        scorer = StyledScorer(testbed, options.prompts, options.prompt_seed, None if model == "base" else "bright")
        context, seeds = testbed.encode_prompts(scorer.captions[:options.prompts]), list(range(options.prompts))

        def measure(method: str, steps: int, calls: int, make_images) -> None:
            started = time.time()
            row = {"model": model, "method": method, "steps": steps, "calls": calls, **scorer.score(make_images())}
            rows.append(row)
            style = "" if row["style"] is None else f"  style {row['style']:5.1f} %"
            print(f"{model:<11}{method:<19}{steps:>4} steps{calls:>4} calls  alignment {row['alignment']:5.1f} %  "
                  f"FD {row['fd']:7.1f}{style}  ({time.time() - started:.0f} s)", flush=True)

        measure("unguided", 20, 20, lambda: testbed.generate(context, seeds, steps=20))
        for steps in (20, 10):
            measure("cfg", steps, 2 * steps, lambda: testbed.generate(context, seeds, steps=steps, cfg_scale=GUIDANCE))
        for method, path in (("adapter_base", options.adapter), ("adapter_own", options.own.get(model)),
                             ("adapter_base_tuned", options.tuned.get(model)), ("adapter_mix", options.mix)):
            if path is None:
                continue
            adapted = Adapted(testbed, path)
            strength, _ = adapted.file.strength_at(GUIDANCE)
            with adapted.at(strength):
                measure(method, 20, 20, lambda: testbed.generate(context, seeds, steps=20))
            adapted.adapter.detach()

    print(f"\n{options.prompts} held-out prompts drawn with seed {options.prompt_seed}, DPM-Solver++(2M), w = {GUIDANCE:g}")
    print(f"{'model':<11}{'method':<19}{'steps':>6}{'calls':>6}{'alignment %':>13}{'FD':>9}{'style %':>9}")
    for r in rows:
        style = "" if r["style"] is None else f"{r['style']:.1f}"
        print(f"{r['model']:<11}{r['method']:<19}{r['steps']:>6}{r['calls']:>6}{r['alignment']:>13.1f}{r['fd']:>9.1f}"
              f"{style:>9}")
    print("\n" + "\n".join(verdicts(rows, mixed)))
    print(json.dumps({"prompt_seed": options.prompt_seed, "prompts": options.prompts,
                      "rows": [{k: r[k] for k in ("model", "method", "steps", "calls", "alignment", "fd", "style")}
                               for r in rows]}))


if __name__ == "__main__":
    main()
