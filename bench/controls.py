"""CFG's two controls at one call per step on the testbed: the guidance knob against CFG at each scale, and negative
prompts against CFG with the negative as its uncond.

    python bench/controls.py --prompt-seed 2026 --prompts 1000
    python bench/controls.py --prompt-seed 11 --prompts 500 --adapter outputs/a.safetensors outputs/b.safetensors \\
        --nag 3,2.5,0.5 --nag 5,2.5,0.25

The knob: for each w of --scales, CFG at w (20 steps, 40 calls; and 10 steps), unguided sampling, and each adapter at
the strength its knob gives for w (20 calls), with alignment, FD and the held-out distance to CFG's prediction at w
over unguided's (the trainer's held-out distance); at w = 5 also 10 and 16 calls against CFG at half the steps.
Negatives: held-out prompts that each leave one attribute open (background, size or position) with a negative prompt
naming one value of it; how often that value appears (chance 1/3, 1/2, 1/5), the positive prompt's alignment and FD,
for unguided sampling (no negative), CFG at --negative-cfg with the negative as uncond (2 calls a step) and each
one-call method: each adapter ignoring the negative, with NAG (each --nag), with its partner sharpener given the
negative as reference. All DPM-Solver++(2M). Prints a table and, on its last line, one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np

from common import Scorer, closure, load_pack

PACK_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADAPTER = PACK_ROOT / "outputs" / "testbed_adapter.safetensors"
HELD_OUT_SEED = 999_999  # the trainer's held-out batch (seed 0 + 999,999), so distances read as its summary's


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-seed", type=int, required=True, help="seed that draws the held-out prompts")
    parser.add_argument("--prompts", type=int, default=1000, help="held-out prompts for the knob and for negatives")
    parser.add_argument("--adapter", nargs="*", default=None, help="testbed guidance adapters, each its own rows (default: "
                        "outputs/testbed_adapter.safetensors, which bash scripts/run.sh writes)")
    parser.add_argument("--scales", default="2,3,5,7,9", help="the CFG scales w of the knob rows")
    parser.add_argument("--strengths", default="", help="also score each adapter at these fixed strengths (a sweep, "
                        "comma-separated), at 20 calls")
    parser.add_argument("--nag", action="append", default=None, metavar="SCALE,TAU,ALPHA",
                        help="NAG settings of an adapter+nag row (repeatable; default: the pack's NAG defaults)")
    parser.add_argument("--negative-cfg", type=float, default=5.0, help="the CFG scale of the negative-prompt rows")
    parser.add_argument("--held-out", type=int, default=512, help="samples of the held-out distance")
    parser.add_argument("--skip", default="", help="parts to leave out, comma-separated (knob, negatives)")
    parser.add_argument("--baselines-from", help="take the unguided and CFG rows from this earlier output of the bench "
                        "(its last line) instead of sampling them again; it must have the same seed and prompts")
    parser.add_argument("--plot", default="outputs/controls.png", help="alignment and FD against w")
    options = parser.parse_args()
    if options.adapter is None:
        if not DEFAULT_ADAPTER.exists():
            parser.error(f"no adapter: pass --adapter, or run bash scripts/run.sh first (it writes {DEFAULT_ADAPTER})")
        options.adapter = [str(DEFAULT_ADAPTER)]
    options.scales = [float(v) for v in options.scales.split(",")]
    options.strengths = [float(v) for v in options.strengths.split(",") if v]
    options.skip = set(filter(None, options.skip.split(",")))
    options.baselines = earlier_baselines(parser, options)
    return options


def earlier_baselines(parser, options) -> dict:
    """{(part, method, w, steps): row} of the unguided and CFG rows of an earlier run, or {}."""
    if not options.baselines_from:
        return {}
    lines = Path(options.baselines_from).read_text().strip().splitlines()
    earlier = json.loads(lines[-1])
    if (earlier["prompt_seed"], earlier["prompts"]) != (options.prompt_seed, options.prompts):
        parser.error(f"--baselines-from {options.baselines_from}: was run with --prompt-seed {earlier['prompt_seed']} "
                     f"--prompts {earlier['prompts']}, not {options.prompt_seed} and {options.prompts}")
    return {(part, r["method"], r.get("w"), r.get("steps")): r for part in ("knob", "negatives")
            for r in earlier[part] if r["method"] in ("unguided", "cfg") and (part == "knob" or "by_attribute" in r)}


def method_names(files: list) -> list[str]:
    """Each adapter's method: adapter-knob (trained over a range of scales) or adapter-strength (one scale, its
    strength mapped linearly); with several files, the file's stem is added."""
    names = ["adapter-knob" if f.has_knob else "adapter-strength" for f in files]
    return names if len(files) == 1 else [f"{n}:{Path(f.path).stem}" for n, f in zip(names, files)]


class Adapted:
    """One adapter file hooked into the testbed, with the sharpener trained beside it when it names one."""

    def __init__(self, testbed, path: str) -> None:
        from dice_pack.sharpeners import load_sharpener
        from dice_pack.sharpeners.adapter_file import load_adapter

        self.file = load_adapter(path)
        self.partner = (load_sharpener(Path(path).parent / self.file.info.sharpener).network
                        if self.file.info.sharpener else None)
        self.adapter = self.file.attach_to(testbed.unet)
        self.adapter.strength = 0.0

    @contextlib.contextmanager
    def at(self, strength: float):
        self.adapter.strength = strength
        try:
            yield
        finally:
            self.adapter.strength = 0.0

    def context(self, context, reference, strength: float = 1.0):
        """The prompt's context as the adapter was trained to see it: sharpened against reference by its partner, at
        α = the adapter's strength (as the trainer's student)."""
        from dice_pack.sharpeners import sharpen

        return context if self.partner is None else sharpen(self.partner, context, reference, strength)


def held_out_ratio(testbed, adapted: Adapted, batch: dict, w: float, interval: tuple[float, ...] = ()) -> float:
    """The student's distance to CFG's prediction at w over the unguided call's, on the trainer's held-out batch (with
    interval: to CFG applied only at those noise levels, the teacher of a file trained with --guidance-interval)."""
    import torch

    from dice_pack.training.loop import held_out_distances
    from dice_pack.training.student import Student

    student = Student(None if adapted.partner is None else adapted.partner, adapted.adapter,
                      reference_scale=adapted.file.info.guidance_scale, knob_exponent=adapted.file.info.knob_exponent)
    return held_out_distances(testbed, student, {**batch, "w": torch.full((len(batch["x"]),), w)}, w, 256,
                              tuple(interval) or None)["ratio"]


def knob_rows(options, testbed, scorer, adapters, names, measure) -> list[dict]:
    import torch

    from dice_pack.training.loop import make_batch, parse_interval

    context, seeds = testbed.encode_prompts(scorer.captions[:options.prompts]), list(range(options.prompts))
    null = testbed.null_embedding()
    held_out = make_batch(testbed, options.held_out, torch.Generator().manual_seed(HELD_OUT_SEED), [], torch.device("cpu"))
    rows = [measure(dict(method="unguided", w=1.0, steps=20, calls=20, distance_ratio=None),
                    lambda: testbed.generate(context, seeds, steps=20))]
    for w in options.scales:
        budgets = [(20, 40), (10, 20)] + ([(8, 16), (5, 10)] if w == 5 else [])
        for steps, calls in budgets:
            rows.append(measure(dict(method="cfg", w=w, steps=steps, calls=calls, distance_ratio=None),
                                lambda: testbed.generate(context, seeds, steps=steps, cfg_scale=w)))
    for name, adapted in zip(names, adapters):
        for w in options.scales:
            strength, _ = adapted.file.strength_at(w)
            conditioning = adapted.context(context, null.expand(len(context), -1, -1), strength)
            ratio = held_out_ratio(testbed, adapted, held_out, w)
            interval = parse_interval(adapted.file.info.guidance_interval)
            # A file taught CFG in an interval: also its distance to that teacher (the bar reads plain CFG's).
            own = {"teacher_distance_ratio": round(held_out_ratio(testbed, adapted, held_out, w, interval), 4)} \
                if interval else {}
            for steps in (20, 16, 10) if w == 5 else (20,):
                with adapted.at(strength):
                    rows.append(measure(dict(method=name, w=w, steps=steps, calls=steps,
                                             distance_ratio=round(ratio, 4), strength=round(strength, 4), **own),
                                        lambda: testbed.generate(conditioning, seeds, steps=steps)))
        for strength in options.strengths:
            conditioning = adapted.context(context, null.expand(len(context), -1, -1), strength)
            with adapted.at(strength):
                rows.append(measure(dict(method=f"{name} s={strength:g}", w=None, steps=20, calls=20,
                                         distance_ratio=None, strength=strength),
                                    lambda: testbed.generate(conditioning, seeds, steps=20)))
    return rows


def negative_rows(options, testbed, adapters, names, measure_negated) -> list[dict]:
    from dice_pack.sharpeners.nag import NAGSettings
    from dice_pack.training.testbed.data import negation_cases

    cases = negation_cases(options.prompts, options.prompt_seed)
    context = testbed.encode_prompts([c.caption for c in cases])
    negative = testbed.encode_prompts([c.negative for c in cases])
    seeds, w = list(range(len(cases))), options.negative_cfg
    settings = [NAGSettings(*(float(v) for v in text.split(","))) for text in options.nag] if options.nag else [NAGSettings()]
    rows = [measure_negated(cases, dict(method="unguided", calls=20), lambda: testbed.generate(context, seeds, steps=20)),
            measure_negated(cases, dict(method="cfg", calls=40),
                            lambda: testbed.generate(context, seeds, steps=20, cfg_scale=w, null=negative))]
    for name, adapted in zip(names, adapters):
        strength, _ = adapted.file.strength_at(w)
        empty = testbed.null_embedding().expand(len(cases), -1, -1)
        info = adapted.file.info
        trained = [NAGSettings(info.nag_scale, info.nag_tau, info.nag_alpha)] if info.nag_scale else []
        plain = adapted.context(context, empty, strength)
        with adapted.at(strength):
            rows.append(measure_negated(cases, dict(method=f"{name}, negative ignored", calls=20),
                                        lambda: testbed.generate(plain, seeds, steps=20)))
            for nag in trained + [s for s in settings if s not in trained]:
                label = f"{name}+nag" + ("" if len(settings) == 1 and not trained else
                                         f" φ={nag.scale:g},τ={nag.tau:g},α={nag.alpha:g}")
                label += " (as trained)" if nag in trained else ""
                rows.append(measure_negated(cases, dict(method=label, calls=20), lambda: testbed.generate(
                    plain, seeds, steps=20, nag=nag, negative=negative)))
            if adapted.partner is not None:
                rows.append(measure_negated(cases, dict(method=f"{name}+sharpener", calls=20), lambda: testbed.generate(
                    adapted.context(context, negative, strength), seeds, steps=20)))
    return rows


def negation_reference(testbed, options):
    """Features of real images for the negation prompts (their scenes drawn with everything they leave open at random,
    at least 5,000), so FD compares like with like: most of these prompts name one thing, unlike the knob's."""
    import random

    from dice_pack.training.testbed.data import negation_cases, realise, render
    from dice_pack.training.testbed.features import image_features

    rng = random.Random(options.prompt_seed + 1)
    cases = negation_cases(max(options.prompts, 5000), options.prompt_seed)
    return image_features(testbed.features, np.stack([render(rng, realise(rng, c.scene)) for c in cases]))


def plot(rows: list[dict], path: Path) -> None:
    """Alignment and FD against the CFG scale w: CFG at 20 and 10 steps, each knob at 20 calls, unguided."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lines = {"CFG, 20 steps (40 calls)": [r for r in rows if r["method"] == "cfg" and r["steps"] == 20],
             "CFG, 10 steps (20 calls)": [r for r in rows if r["method"] == "cfg" and r["steps"] == 10]}
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] not in ("cfg", "unguided") and r["w"]):
        lines[f"{method}, 20 calls"] = [r for r in rows if r["method"] == method and r["steps"] == 20]
    unguided = next(r for r in rows if r["method"] == "unguided")
    for label, points in lines.items():
        points = sorted(points, key=lambda r: r["w"])
        style = {"linewidth": 2.5, "marker": "o"} if label.startswith("adapter") else {"linewidth": 1.3, "marker": "s"}
        for axis, key in zip(axes, ("alignment", "fd")):
            axis.plot([r["w"] for r in points], [r[key] for r in points], label=label, **style)
    for axis, key, title in zip(axes, ("alignment", "fd"), ("alignment % (higher is better)",
                                                               "Fréchet distance (lower is better)")):
        axis.axhline(unguided[key], color="gray", linestyle=":", label="unguided, 20 calls")
        axis.set_xlabel("CFG scale w (the knob)")
        axis.set_ylabel(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def knob_verdicts(rows: list[dict], name: str) -> list[str]:
    """The issue's bar for one knob: at each w alignment within max(2 points, 10 % of CFG's gain) of CFG at w (20
    steps), FD no worse than CFG at w with 10 steps, distance ratio at most 0.75."""
    table = {(r["method"], r["w"], r["steps"]): r for r in rows}
    unguided = table[("unguided", 1.0, 20)]
    lines = []
    for w in sorted({r["w"] for r in rows if r["method"] == name}):
        ours, cfg, half = table.get((name, w, 20)), table.get(("cfg", w, 20)), table.get(("cfg", w, 10))
        if not (ours and cfg and half):
            continue
        allowed = max(2.0, 0.1 * (cfg["alignment"] - unguided["alignment"]))
        met = (abs(ours["alignment"] - cfg["alignment"]) <= allowed and ours["fd"] <= half["fd"]
               and ours["distance_ratio"] <= 0.75)
        lines.append(f"{name} at w={w:g}: alignment {ours['alignment']:.1f} vs CFG {cfg['alignment']:.1f} (±{allowed:.1f}), "
                     f"FD {ours['fd']:.1f} vs CFG-10 {half['fd']:.1f}, distance ratio {ours['distance_ratio']:.3f}: "
                     f"{'met' if met else 'NOT met'}")
    gain = {s: table.get((name, 5.0, s)) for s in (10, 16, 20)}
    if all(gain.values()) and ("cfg", 5.0, 20) in table:
        closed = closure(gain[20]["alignment"], unguided["alignment"], table[("cfg", 5.0, 20)]["alignment"])
        lines.append(f"{name} at w=5, 20 calls: {closed:.0%} of CFG's alignment gain")
        for calls in (10, 16):
            cfg = table.get(("cfg", 5.0, calls // 2))
            if cfg:
                ahead = gain[calls]["alignment"] >= cfg["alignment"] and gain[calls]["fd"] <= cfg["fd"]
                lines.append(f"{name} at w=5, {calls} calls vs CFG at {calls // 2} steps: {gain[calls]['alignment']:.1f}/"
                             f"{gain[calls]['fd']:.1f} vs {cfg['alignment']:.1f}/{cfg['fd']:.1f}: "
                             f"{'ahead' if ahead else 'NOT ahead'}")
    return lines


def seconds(row: dict) -> str:
    """The row's sampling and scoring time, or "earlier" for a row taken from --baselines-from."""
    return f"{row['seconds']:.1f}" if "seconds" in row else "earlier"


def main() -> None:
    options = parse_args()
    load_pack()
    from dice_pack.training.testbed.evaluator import alignment, shows_value
    from dice_pack.training.testbed.features import frechet_distance, image_features
    from dice_pack.training.testbed.model import DENOISER_FILES, Testbed

    from frontier import check_trained_for

    testbed = Testbed.load()
    check_trained_for(DENOISER_FILES["unet"], options.adapter)
    scorer = Scorer(testbed, options.prompts, options.prompt_seed)
    adapters = [Adapted(testbed, path) for path in options.adapter]
    names = method_names([a.file for a in adapters])

    def measure(row: dict, make_images) -> dict:
        started = time.time()
        earlier = options.baselines.get(("knob", row["method"], row["w"], row["steps"]))
        row.update({k: earlier[k] for k in ("alignment", "fd")} if earlier else scorer.score(make_images()))
        row["seconds"] = round(time.time() - started, 1)
        w = "" if row["w"] is None else f"w={row['w']:g}"
        print(f"{row['method']:<34}{w:>7}{row['steps']:>4} steps{row['calls']:>4} calls  alignment {row['alignment']:5.1f} %"
              f"  FD {row['fd']:7.1f}" + (f"  distance ratio {row['distance_ratio']:.3f}" if row.get("distance_ratio") else "")
              + (f" (to its interval teacher {row['teacher_distance_ratio']:.3f})" if row.get("teacher_distance_ratio") else ""),
              flush=True)
        return row

    def measure_negated(cases, row: dict, make_images) -> dict:
        started = time.time()
        earlier = options.baselines.get(("negatives", row["method"], None, None))
        if earlier:
            row.update({k: earlier[k] for k in ("negated_rate", "alignment", "fd")}, by_attribute=earlier["by_attribute"])
            print(f"{row['method']:<44} (from --baselines-from)  negated {row['negated_rate']:5.1f} %", flush=True)
            return row
        images = make_images()
        shown = np.array([shows_value(image, c.scene, c.attribute, c.value) for image, c in zip(images, cases)])
        row.update(negated_rate=round(100 * float(shown.mean()), 2),
                   alignment=alignment(images, [c.scene for c in cases]),
                   fd=frechet_distance(image_features(testbed.features, images), negation_real))
        row["by_attribute"] = {a: round(100 * float(shown[[c.attribute == a for c in cases]].mean()), 1)
                               for a in ("background", "size", "position")}
        row["seconds"] = round(time.time() - started, 1)
        print(f"{row['method']:<44}{row['calls']:>4} calls  negated {row['negated_rate']:5.1f} % "
              f"({', '.join(f'{a} {v:.1f}' for a, v in row['by_attribute'].items())})  alignment {row['alignment']:5.1f} %"
              f"  FD {row['fd']:7.1f}", flush=True)
        return row

    negation_real = None if "negatives" in options.skip else negation_reference(testbed, options)
    knob = [] if "knob" in options.skip else knob_rows(options, testbed, scorer, adapters, names, measure)
    negatives = [] if "negatives" in options.skip else negative_rows(options, testbed, adapters, names, measure_negated)

    print(f"\n{options.prompts} held-out prompts drawn with seed {options.prompt_seed}, DPM-Solver++(2M)")
    if knob:
        print(f"{'method':<34}{'w':>5}{'steps':>6}{'calls':>6}{'alignment %':>13}{'FD':>9}{'distance ratio':>16}")
        for r in sorted(knob, key=lambda r: (r["method"], r["w"] or 0, r["steps"])):
            ratio = "" if r["distance_ratio"] is None else f"{r['distance_ratio']:.3f}"
            w = "" if r["w"] is None else f"{r['w']:g}"
            print(f"{r['method']:<34}{w:>5}{r['steps']:>6}{r['calls']:>6}{r['alignment']:>13.1f}{r['fd']:>9.1f}{ratio:>16}")
        print("\n" + "\n".join(line for name in names for line in knob_verdicts(knob, name)))
        plot(knob, Path(options.plot))
        print(f"plot: {options.plot}")
    if negatives:
        print(f"\nnegative prompts at w = {options.negative_cfg:g}; negated value shown (chance: background 33.3 %, "
              f"size 50 %, position 20 %)")
        print(f"{'method':<44}{'calls':>6}{'negated %':>11}{'background':>12}{'size':>7}{'position':>10}"
              f"{'alignment %':>13}{'FD':>9}{'seconds':>9}")
        for r in negatives:
            b = r["by_attribute"]
            print(f"{r['method']:<44}{r['calls']:>6}{r['negated_rate']:>11.1f}{b['background']:>12.1f}{b['size']:>7.1f}"
                  f"{b['position']:>10.1f}{r['alignment']:>13.1f}{r['fd']:>9.1f}{seconds(r):>9}")
        print("(seconds: sampling and scoring the row on this machine; NAG's extra attention is the difference)")
    keep = {"knob": ("method", "w", "steps", "calls", "alignment", "fd", "distance_ratio"),
            "negatives": ("method", "calls", "negated_rate", "alignment", "fd")}
    # by_attribute rides along in the negative rows so --baselines-from can show it; the keys come first.
    print(json.dumps({"prompt_seed": options.prompt_seed, "prompts": options.prompts,
                      "knob": [{**{k: r[k] for k in keep["knob"]},
                                **{k: r[k] for k in ("teacher_distance_ratio",) if k in r}} for r in knob],
                      "negatives": [{**{k: r[k] for k in keep["negatives"]}, "by_attribute": r["by_attribute"]}
                                    for r in negatives]}, ensure_ascii=False))


if __name__ == "__main__":
    main()
