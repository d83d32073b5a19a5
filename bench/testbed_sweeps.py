"""The α sweep against the guidance-scale sweep (the paper's Figure 6), and where sharpening acts: padding or words.

    python bench/testbed_sweeps.py --sharpener outputs/testbed.safetensors [--prompts 1000]

For each α (DICE, one UNet call a step) and each CFG scale w (two calls), alignment and Fréchet distance on the
held-out prompts; a plot of both curves (outputs/alpha_vs_guidance.svg). Then the cosine similarity between c and
the sharpened c on the prompt's word tokens and on its padding tokens, and the ablation that sharpens only one
of the two parts. Prints the figures and, on its last line, one JSON object holding them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from common import TestbedBench, add_testbed_arguments

COLOURS = {"dice": "#d62728", "cfg": "#1f77b4"}


def sweep_plot(curves: dict[str, list[tuple[float, float, str]]], path: Path) -> None:
    """FD (x) against alignment (y), one labelled line per sweep, with matplotlib (SVG or PNG by the extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for name, curve in curves.items():
        colour = COLOURS[name.split()[0]]
        axis.plot([x for x, _, _ in curve], [y for _, y, _ in curve], marker="o", color=colour, label=name)
        for x, y, label in curve:
            axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), color=colour, fontsize=8)
    axis.set_xlabel("Fréchet distance (lower is better)")
    axis.set_ylabel("alignment % (higher is better)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_testbed_arguments(parser)
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1,1.25,1.5")
    parser.add_argument("--scales", default="1,1.5,2,3,5,7")
    parser.add_argument("--plot", default="outputs/alpha_vs_guidance.svg")
    options = parser.parse_args()
    bench = TestbedBench(options)
    from dice_pack.sharpeners import sharpen
    from dice_pack.training.testbed.text_encoder import first_padding_index

    testbed, sharpener, scorer, prompts = bench.testbed, bench.sharpener, bench.scorer, bench.prompts
    count, steps, context, null, seeds = bench.count, bench.steps, bench.context, bench.null, bench.seeds
    figures = {"alpha_sweep": [], "guidance_sweep": []}
    for alpha in (float(a) for a in options.alphas.split(",")):
        found = dict(scorer.score(testbed.generate(sharpen(sharpener, context, null, alpha), seeds, steps=steps)), alpha=alpha)
        figures["alpha_sweep"].append(found)
        print(f"DICE α={alpha:g}: alignment {found['alignment']:.1f} %, FD {found['fd']:.2f}", flush=True)
    for scale in (float(w) for w in options.scales.split(",")):
        found = dict(scorer.score(testbed.generate(context, seeds, steps=steps, cfg_scale=scale)), cfg=scale)
        figures["guidance_sweep"].append(found)
        print(f"CFG w={scale:g}: alignment {found['alignment']:.1f} %, FD {found['fd']:.2f}", flush=True)
    sweep_plot({"dice (α, 1 call/step)": [(f["fd"], f["alignment"], f"α {f['alpha']:g}") for f in figures["alpha_sweep"]],
                "cfg (w, 2 calls/step)": [(f["fd"], f["alignment"], f"w {f['cfg']:g}") for f in figures["guidance_sweep"]]},
               Path(options.plot))

    # Which tokens does sharpening move? Words: [CLS] through the first [SEP]; padding: the [SEP]s after it.
    sharpened = sharpen(sharpener, context, null, 1.0)
    words = torch.zeros(context.shape[:2], dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        words[row, :first_padding_index(testbed.text.tokenizer, prompt)] = True
    cosine = torch.nn.functional.cosine_similarity(context, sharpened, dim=-1)
    change = (sharpened - context).norm(dim=-1) / context.norm(dim=-1)
    figures["cosine_words"], figures["cosine_padding"] = float(cosine[words].mean()), float(cosine[~words].mean())
    figures["relative_change_words"], figures["relative_change_padding"] = float(change[words].mean()), float(change[~words].mean())
    print(f"cos(c, sharpened c): word tokens {figures['cosine_words']:.3f}, padding tokens {figures['cosine_padding']:.3f}; "
          f"|Δ|/|c|: words {figures['relative_change_words']:.3f}, padding {figures['relative_change_padding']:.3f}")
    for part, mask in (("words_only", words), ("padding_only", ~words)):
        ablated = torch.where(mask[..., None], sharpened, context)
        found = scorer.score(testbed.generate(ablated, seeds, steps=steps))
        figures[f"sharpen_{part}"] = found
        print(f"sharpen {part.replace('_', ' ')}: alignment {found['alignment']:.1f} %, FD {found['fd']:.2f}", flush=True)
    print(f"plot: {options.plot}")
    print(json.dumps(dict(figures, prompts=count, steps=steps)))


if __name__ == "__main__":
    main()
