"""Image quality against UNet calls on the testbed: DICE and every peer at equal cost.

    python bench/frontier.py --sharpener outputs/testbed.safetensors --prompt-seed 7 --prompts 1000 --budgets 6,10,16,20,40

For each budget of UNet calls per image: unguided sampling; CFG at half the steps (the same calls) and at the same
steps (twice the calls); embedding scaling (the best s of a grid); the training-free fusion c + (w−1)(c − c_null);
a TeEFusion-style student (the testbed UNet fine-tuned to take w; trained on first use, a few minutes); each
sharpener given; and with --cfg-then-dice the recipe CFG then the first sharpener for the last two steps; all with
DPM-Solver++(2M) on held-out prompts drawn with --prompt-seed. Prints a table, whether each DICE row meets the bar of
equal-cost CFG, writes a plot of both metrics against calls, and prints one JSON object on its last line.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import Scorer, closure, load_pack

PACK_ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sharpener", nargs="+", required=True, help="one or more testbed sharpeners (DICE variants)")
    parser.add_argument("--alpha", default=None, help="sharpening strength α, or several comma-separated, each its own "
                        "row (default: each file's own default_alpha)")
    parser.add_argument("--prompt-seed", type=int, required=True, help="seed that draws the held-out prompts")
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--budgets", default="6,10,16,20,40", help="UNet calls per image; even, so CFG can halve them")
    parser.add_argument("--cfg", type=float, default=5.0, help="the guidance scale of CFG, fusion and TeEFusion")
    parser.add_argument("--scales", default="1.25,1.5,2", help="the grid of embedding scaling factors s (s·c)")
    parser.add_argument("--teefusion", default=str(PACK_ROOT / "outputs" / "testbed_teefusion.safetensors"),
                        help="the TeEFusion-style student; trained and written here when missing")
    parser.add_argument("--negatives-sharpener", help="a sharpener trained with --negatives: adds rows with a negative "
                        "prompt (CFG with it as uncond against DICE with it as reference plus Negative Shift)")
    parser.add_argument("--negative-prompt", default="a picture on a gray background", help="the negative of those rows")
    parser.add_argument("--betas", default="0,0.5,1", help="the Negative Shift strengths β of those rows")
    parser.add_argument("--cfg-then-dice", action="store_true", help="add rows for the recipe CFG for all but the "
                        "last two steps, then the first sharpener (its first α) for those two (bench/levers/cfg_then_dice.py)")
    parser.add_argument("--skip", default="", help="peers to leave out, comma-separated (scaling,fusion,teefusion)")
    parser.add_argument("--plot", default="outputs/frontier.png")
    options = parser.parse_args()
    options.budgets = sorted({int(b) for b in options.budgets.split(",")})
    odd = [b for b in options.budgets if b % 2 or b < 2]
    if odd:
        parser.error(f"--budgets: each must be even and at least 2 (CFG spends two calls a step), got {odd}")
    return options


def variant_names(paths: list[str]) -> list[str]:
    """'dice' for one file; 'dice:<file stem>' for several, so the rows stay apart."""
    return ["dice"] if len(paths) == 1 else [f"dice:{Path(p).stem}" for p in paths]


def better(value: float, than: float, metric: str) -> bool:
    """At least as good: higher alignment, lower FD."""
    return value >= than if metric == "alignment" else value <= than


def bar_verdicts(rows: list[dict], name: str) -> list[str]:
    """The issue's bar for one DICE variant: equal-cost CFG beaten at 10 and 20 calls, 90 % of CFG's gap closed."""
    table = {(r["method"], r["steps"]): r for r in rows}
    lines = []
    for calls in (10, 20):
        dice, cfg = table.get((name, calls)), table.get(("cfg", calls // 2))
        if dice and cfg:
            met = better(dice["alignment"], cfg["alignment"], "alignment") and better(dice["fd"], cfg["fd"], "fd")
            lines.append(f"{name} at {calls} calls against CFG at {calls // 2} steps: alignment {dice['alignment']:.1f} "
                         f"vs {cfg['alignment']:.1f}, FD {dice['fd']:.1f} vs {cfg['fd']:.1f}: {'met' if met else 'NOT met'}")
    dice, cfg, unguided = table.get((name, 20)), table.get(("cfg", 20)), table.get(("unguided", 20))
    if dice and cfg and unguided:
        gaps = [closure(dice[k], unguided[k], cfg[k]) for k in ("alignment", "fd")]
        # Met when 90 % of the way from unguided to CFG, or past CFG itself (which also covers a prompt set where
        # CFG is worse than unguided sampling, so there is no gap to close).
        met = [gap >= 0.9 or better(dice[k], cfg[k], k) for gap, k in zip(gaps, ("alignment", "fd"))]
        lines.append(f"{name} at 20 calls against CFG at 20 steps (40 calls): alignment {dice['alignment']:.1f} vs "
                     f"{cfg['alignment']:.1f} ({gaps[0]:.0%} of the gap from unguided), FD {dice['fd']:.1f} vs "
                     f"{cfg['fd']:.1f} ({gaps[1]:.0%}): {'met' if all(met) else 'NOT met'} (bar 90 % of each gap)")
    return lines


def negative_rows(options, testbed, context, null, measure) -> list[dict]:
    """CFG with a negative prompt as its uncond, against DICE given the same negative: the sharpener trained with
    negatives (negative as reference) and the main sharpener (empty reference), each with Negative Shift at each β."""
    from dice_pack.sharpeners import load_sharpener, negative_shift, sharpen

    negative, text = testbed.encode_prompts([options.negative_prompt]), options.negative_prompt
    seeds = list(range(len(context)))
    rows = []
    for steps in options.budgets:
        rows.append(measure("cfg-negative", steps // 2, steps, lambda: testbed.generate(
            context, seeds, steps=steps // 2, cfg_scale=options.cfg, null=negative), negative=text))
    variants = {"dice-negatives": (options.negatives_sharpener, negative), "dice-empty-reference": (options.sharpener[0], null)}
    for name, (path, reference) in variants.items():
        loaded = load_sharpener(path)
        alpha = loaded.info.default_alpha if options.alpha is None else float(options.alpha.split(",")[0])
        sharpened = sharpen(loaded.network, context, reference, alpha)
        for beta in (float(b) for b in options.betas.split(",")):
            shifted = negative_shift(sharpened, negative, null, beta)
            for steps in options.budgets:
                rows.append(measure(f"{name} β={beta:g}", steps, steps, lambda: testbed.generate(shifted, seeds, steps=steps),
                                    alpha=alpha, beta=beta, negative=text, file=Path(path).name))
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Alignment and FD against UNet calls, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = [r for r in rows if "negative" not in r]  # the negative-prompt rows answer another question: the table has them
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        points = sorted((r["calls"], r["alignment"], r["fd"]) for r in rows if r["method"] == method)
        style = ({"linewidth": 2.5, "marker": "o"} if method.startswith("dice") else
                 {"linewidth": 2.0, "marker": "s", "linestyle": "--"} if method == "cfg-then-dice" else
                 {"linewidth": 1.2, "marker": "."})
        for axis, column in zip(axes, (1, 2)):
            axis.plot([p[0] for p in points], [p[column] for p in points], label=method, **style)
    for axis, label in zip(axes, ("alignment % (higher is better)", "Fréchet distance (lower is better)")):
        axis.set_xscale("log", base=2)
        calls = sorted({r["calls"] for r in rows})
        axis.set_xticks(calls, [str(c) for c in calls])
        axis.set_xlabel("UNet calls per image")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    options = parse_args()
    load_pack()
    from dice_pack.sharpeners import load_sharpener, sharpen
    from dice_pack.training.testbed.model import Testbed
    from dice_pack.training.testbed.teefusion import load_or_train_student

    testbed = Testbed.load()
    scorer = Scorer(testbed, options.prompts, options.prompt_seed)
    count = options.prompts
    context, null = testbed.encode_prompts(scorer.captions[:count]), testbed.null_embedding()
    seeds = list(range(count))
    skip = set(filter(None, options.skip.split(",")))
    rows: list[dict] = []

    def measure(method: str, steps: int, calls: int, make_images, **extra) -> dict:
        started = time.time()
        row = dict(method=method, steps=steps, calls=calls, **scorer.score(make_images()), **extra)
        row["seconds"] = round(time.time() - started, 1)
        print(f"{method:<28}{steps:>6} steps{calls:>6} calls  alignment {row['alignment']:5.1f} %  FD {row['fd']:8.1f}",
              flush=True)
        return row

    cfg_steps = sorted({b // 2 for b in options.budgets} | set(options.budgets))
    for steps in options.budgets:
        rows.append(measure("unguided", steps, steps, lambda: testbed.generate(context, seeds, steps=steps)))
    for steps in cfg_steps:
        rows.append(measure("cfg", steps, 2 * steps,
                            lambda: testbed.generate(context, seeds, steps=steps, cfg_scale=options.cfg), w=options.cfg))
    if "scaling" not in skip:
        for steps in options.budgets:
            tried = [measure(f"scaling s={s:g}", steps, steps, lambda: testbed.generate(s * context, seeds, steps=steps), s=s)
                     for s in (float(v) for v in options.scales.split(","))]
            unguided_fd = next(r["fd"] for r in rows if r["method"] == "unguided" and r["steps"] == steps)
            # The best s: the highest alignment whose FD is no worse than unguided sampling's (s = 2 buys alignment
            # with images far from real ones), else the highest alignment.
            fair = [r for r in tried if r["fd"] <= unguided_fd] or tried
            rows.append(dict(max(fair, key=lambda r: r["alignment"]), method="scaling"))
    if "fusion" not in skip:
        fused = context + (options.cfg - 1) * (context - null)
        for steps in options.budgets:
            rows.append(measure("fusion", steps, steps, lambda: testbed.generate(fused, seeds, steps=steps), w=options.cfg))
    if "teefusion" not in skip:
        student = load_or_train_student(testbed, Path(options.teefusion), log=lambda text: print(text, flush=True))
        for steps in options.budgets:
            rows.append(measure("teefusion", steps, steps,
                                lambda: student.generate(testbed, context, seeds, steps, options.cfg), w=options.cfg))
    verdicts = []
    for file_name, path in zip(variant_names(options.sharpener), options.sharpener):
        loaded = load_sharpener(path)
        alphas = [loaded.info.default_alpha] if options.alpha is None else [float(a) for a in options.alpha.split(",")]
        for alpha in alphas:
            name = file_name if len(alphas) == 1 else f"{file_name} α={alpha:g}"
            sharpened = sharpen(loaded.network, context, null, alpha)
            for steps in options.budgets:
                rows.append(measure(name, steps, steps, lambda: testbed.generate(sharpened, seeds, steps=steps),
                                    alpha=alpha, file=Path(path).name))
            verdicts += bar_verdicts(rows, name)
    if options.cfg_then_dice:
        loaded = load_sharpener(options.sharpener[0])
        alpha = loaded.info.default_alpha if options.alpha is None else float(options.alpha.split(",")[0])
        sharpened = sharpen(loaded.network, context, null, alpha)
        for calls in options.budgets:
            # k CFG steps (2k calls) and two sharpened ones: calls = 2k + 2, over one schedule of k + 2 steps.
            cfg_steps = calls // 2 - 1
            rows.append(measure("cfg-then-dice", cfg_steps + 2, calls, lambda: testbed.generate_cfg_then(
                context, sharpened, seeds, cfg_steps + 2, cfg_steps, options.cfg), alpha=alpha, cfg_steps=cfg_steps,
                w=options.cfg, file=Path(options.sharpener[0]).name))

    if options.negatives_sharpener:
        rows += negative_rows(options, testbed, context, null, measure)

    print(f"\n{count} held-out prompts drawn with seed {options.prompt_seed}, image seeds 0..{count - 1}, "
          f"DPM-Solver++(2M), CFG w = {options.cfg:g}")
    print(f"{'method':<28}{'steps':>6}{'UNet calls':>12}{'alignment %':>13}{'FD':>9}")
    for row in sorted(rows, key=lambda r: (r["calls"], r["method"])):
        print(f"{row['method']:<28}{row['steps']:>6}{row['calls']:>12}{row['alignment']:>13.1f}{row['fd']:>9.1f}")
    print("\n" + "\n".join(verdicts))
    plot(rows, Path(options.plot))
    print(f"plot: {options.plot}")
    print(json.dumps({"prompt_seed": options.prompt_seed, "prompts": count, "rows": rows}, ensure_ascii=False))


if __name__ == "__main__":
    main()
