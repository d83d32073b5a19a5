"""Image quality against UNet calls on the testbed: DICE and every peer at equal cost.

    python bench/frontier.py --sharpener outputs/testbed.safetensors --prompt-seed 7 --prompts 1000 --budgets 6,10,16,20,40
    python bench/frontier.py --testbed dit --prompt-seed 2026 --plot outputs/frontier_dit.png   # the transformer testbed

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
    parser.add_argument("--testbed", choices=["unet", "dit"], default="unet", help="the testbed model: the UNet, or "
                        "the flow-matching transformer (its files default to outputs/testbed_dit*.safetensors)")
    parser.add_argument("--sharpener", nargs="*", default=None, help="testbed sharpeners, each its own rows (default: "
                        "outputs/testbed.safetensors, which bash scripts/run.sh writes, when it exists)")
    parser.add_argument("--adapter", nargs="*", default=None, help="testbed guidance adapters, each its own rows, with "
                        "the sharpener trained with it when its metadata names one (found beside it) (default: "
                        "outputs/testbed_adapter.safetensors when it exists)")
    parser.add_argument("--alpha", default=None, help="sharpening strength α, or several comma-separated, each its own "
                        "row (default: each file's own default_alpha)")
    parser.add_argument("--strength", default="1", help="the adapters' strength (as a LoRA loader's), or several "
                        "comma-separated, each its own row")
    parser.add_argument("--prompt-seed", type=int, required=True, help="seed that draws the held-out prompts")
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--budgets", default="6,10,16,20,40", help="UNet calls per image; even, so CFG can halve them")
    parser.add_argument("--cfg", type=float, default=5.0, help="the guidance scale of CFG, fusion and TeEFusion")
    parser.add_argument("--scales", default="1.25,1.5,2", help="the grid of embedding scaling factors s (s·c)")
    parser.add_argument("--teefusion", default=None, help="the TeEFusion-style student; trained and written here when "
                        "missing (default: outputs/testbed_teefusion.safetensors, or testbed_dit_teefusion)")
    parser.add_argument("--negatives-sharpener", help="a sharpener trained with --negatives: adds rows with a negative "
                        "prompt (CFG with it as uncond against DICE with it as reference plus Negative Shift)")
    parser.add_argument("--negative-prompt", default="a picture on a gray background", help="the negative of those rows")
    parser.add_argument("--betas", default="0,0.5,1", help="the Negative Shift strengths β of those rows")
    parser.add_argument("--cfg-then-dice", action="store_true", help="add rows for the recipe CFG for all but the "
                        "last two steps, then the first sharpener (its first α) for those two (bench/levers/cfg_then_dice.py)")
    parser.add_argument("--guidance-interval", metavar="LOW,HIGH", help="add rows of CFG applied only at these noise "
                        "levels (train.py's flag of that name; 1 is pure noise, 0 clean), the teacher of an adapter "
                        "trained with it")
    parser.add_argument("--skip", default="", help="peers to leave out, comma-separated (scaling,fusion,teefusion)")
    parser.add_argument("--plot", default="outputs/frontier.png")
    options = parser.parse_args()
    stem = "testbed_dit" if options.testbed == "dit" else "testbed"
    options.sharpener = existing(options.sharpener, f"{stem}.safetensors")
    options.adapter = existing(options.adapter, f"{stem}_adapter.safetensors")
    options.teefusion = options.teefusion or str(PACK_ROOT / "outputs" / f"{stem}_teefusion.safetensors")
    if not options.sharpener and not options.adapter:
        parser.error("no sharpener or adapter: pass --sharpener or --adapter, or run bash scripts/run.sh first")
    if (options.cfg_then_dice or options.negatives_sharpener) and not options.sharpener:
        parser.error("--cfg-then-dice and --negatives-sharpener need a --sharpener")
    from dice_pack.training.loop import parse_interval

    try:
        options.guidance_interval = parse_interval(options.guidance_interval or "") or None
    except ValueError as error:
        parser.error(f"--guidance-interval {options.guidance_interval}: {error}")
    options.budgets = sorted({int(b) for b in options.budgets.split(",")})
    odd = [b for b in options.budgets if b % 2 or b < 2]
    if odd:
        parser.error(f"--budgets: each must be even and at least 2 (CFG spends two calls a step), got {odd}")
    return options


def check_trained_for(weights: Path, files: list[str]) -> None:
    """Refuse a sharpener or adapter trained on the other testbed (its metadata names its base model's sha256)."""
    from safetensors import safe_open

    from dice_pack.training.hashing import file_sha256

    expected = file_sha256(weights)
    for file in files:
        with safe_open(file, framework="pt") as f:
            recorded = (f.metadata() or {}).get("base_checkpoint_sha256", "")
        if recorded and recorded != expected:
            raise SystemExit(f"{file}: trained for another testbed model (base sha256 {recorded[:12]}…, this one's is "
                             f"{expected[:12]}…); pass --testbed to match it")


def existing(paths: list[str] | None, default: str) -> list[str]:
    """The files given, or outputs/<default> when none were given and it exists."""
    if paths is not None:
        return paths
    path = PACK_ROOT / "outputs" / default
    return [str(path)] if path.exists() else []


def variant_names(paths: list[str], kind: str = "dice") -> list[str]:
    """'dice' for one file; 'dice:<file stem>' for several, so the rows stay apart (likewise 'adapter')."""
    return [kind] if len(paths) == 1 else [f"{kind}:{Path(p).stem}" for p in paths]


def better(value: float, than: float, metric: str) -> bool:
    """At least as good: higher alignment, lower FD."""
    return value >= than if metric == "alignment" else value <= than


def bar_checks(rows: list[dict], name: str) -> list[tuple[str, bool]]:
    """The bar for one method the pack ships, each line with whether it is met: CFG at half the steps beaten in
    alignment and FD at 10 and 16 calls; at 20 calls 90 % of CFG's alignment gain (unguided to CFG at 20 steps) with
    an FD no worse than CFG at 10 steps'."""
    table = {(r["method"], r["steps"] if r["method"] == "cfg" else r["calls"]): r for r in rows}
    checks = []
    for calls in (10, 16):
        ours, cfg = table.get((name, calls)), table.get(("cfg", calls // 2))
        if ours and cfg:
            met = better(ours["alignment"], cfg["alignment"], "alignment") and better(ours["fd"], cfg["fd"], "fd")
            checks.append((f"{name} at {calls} calls against CFG at {calls // 2} steps: alignment {ours['alignment']:.1f} "
                           f"vs {cfg['alignment']:.1f}, FD {ours['fd']:.1f} vs {cfg['fd']:.1f}: "
                           f"{'met' if met else 'NOT met'}", met))
    ours, cfg, half, unguided = (table.get(k) for k in ((name, 20), ("cfg", 20), ("cfg", 10), ("unguided", 20)))
    if ours and cfg and half and unguided:
        gain = closure(ours["alignment"], unguided["alignment"], cfg["alignment"])
        met = gain >= 0.9 and better(ours["fd"], half["fd"], "fd")
        checks.append((f"{name} at 20 calls: {gain:.0%} of CFG's alignment gain (unguided {unguided['alignment']:.1f} → "
                       f"CFG at 20 steps {cfg['alignment']:.1f}; {name} {ours['alignment']:.1f}), FD {ours['fd']:.1f} vs "
                       f"CFG at 10 steps {half['fd']:.1f}: {'met' if met else 'NOT met'} (bar 90 % and no worse FD)", met))
    return checks


def bar_verdicts(rows: list[dict], name: str) -> list[str]:
    """The bar's lines for one method."""
    return [line for line, _ in bar_checks(rows, name)]


def shipped_methods(rows: list[dict]) -> list[str]:
    """The methods the bar reads: every row whose method starts with dice or adapter (the negative-prompt rows, which
    answer another question, left out)."""
    return list(dict.fromkeys(r["method"] for r in rows if r["method"].startswith(("dice", "adapter"))
                              and "negative" not in r))


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
        style = ({"linewidth": 2.5, "marker": "o"} if method.startswith(("dice", "adapter")) else
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
    load_pack()  # before the flags: --guidance-interval is read by the trainer's own parser
    options = parse_args()
    from dice_pack.sharpeners import load_sharpener, sharpen
    from dice_pack.sharpeners.adapter_file import load_adapter
    from dice_pack.training.sampler import in_interval
    from dice_pack.training.testbed.model import DENOISER_FILES, DENOISERS, Testbed
    from dice_pack.training.testbed.teefusion import load_or_train_student

    testbed = Testbed.load(DENOISERS[options.testbed])
    check_trained_for(DENOISER_FILES[options.testbed], [*options.sharpener, *options.adapter])
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
    if options.guidance_interval:
        for steps in cfg_steps:  # the steps outside the interval make one call, those inside two
            levels = testbed.noise_level(testbed.sampling_sigmas(steps)[:-1])
            guided_steps = int(in_interval(levels, options.guidance_interval).sum())
            rows.append(measure("cfg-interval", steps, steps + guided_steps, lambda: testbed.generate(
                context, seeds, steps=steps, cfg_scale=options.cfg, interval=options.guidance_interval),
                w=options.cfg, interval=list(options.guidance_interval)))
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
    for file_name, path in zip(variant_names(options.sharpener), options.sharpener):
        loaded = load_sharpener(path)
        alphas = [loaded.info.default_alpha] if options.alpha is None else [float(a) for a in options.alpha.split(",")]
        for alpha in alphas:
            name = file_name if len(alphas) == 1 else f"{file_name} α={alpha:g}"
            sharpened = sharpen(loaded.network, context, null, alpha)
            for steps in options.budgets:
                rows.append(measure(name, steps, steps, lambda: testbed.generate(sharpened, seeds, steps=steps),
                                    alpha=alpha, file=Path(path).name))
    for name, path in zip(variant_names(options.adapter, "adapter"), options.adapter):
        adapter_file = load_adapter(path)
        conditioning, extra = context, {"file": Path(path).name}
        if adapter_file.info.sharpener:
            # Trained together: the adapted model was taught on the sharpened text, so it samples on it too.
            partner = load_sharpener(Path(path).parent / adapter_file.info.sharpener)
            conditioning = sharpen(partner.network, context, null, 1.0)
            name, extra["sharpener"] = f"{name}+sharpener", adapter_file.info.sharpener
        adapter = adapter_file.attach_to(testbed.unet)
        strengths = [float(v) for v in options.strength.split(",")]
        try:
            for strength in strengths:
                adapter.strength = strength
                label = name if len(strengths) == 1 else f"{name} s={strength:g}"
                for steps in options.budgets:
                    rows.append(measure(label, steps, steps, lambda: testbed.generate(conditioning, seeds, steps=steps),
                                        strength=strength, **extra))
        finally:
            adapter.detach()
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
    verdicts = [line for method in shipped_methods(rows) for line in bar_verdicts(rows, method)]
    print("\n" + "\n".join(verdicts))
    plot(rows, Path(options.plot))
    print(f"plot: {options.plot}")
    print(json.dumps({"prompt_seed": options.prompt_seed, "prompts": count, "rows": rows}, ensure_ascii=False))


if __name__ == "__main__":
    main()
