"""The trainer's command line: parse, find the model and the data, run the loop, report."""
from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from .hashing import file_sha256
from .loop import RunInfo, TrainConfig, parse_interval, train
from ..sharpeners.adapter import LAYER_SELECTIONS
from .precision import PRECISIONS

PACK_ROOT = Path(__file__).resolve().parents[1]
# --ckpt's default run: 64,000 samples, where the testbed's closure of the gap to CFG levelled off (README,
# What training costs); the paper trains 8,000 steps of 128.
CKPT_STEPS, CKPT_BATCH = 4000, 16
# The testbed's guidance adapter with its cfg knob: 3,200 steps of 64, where the controls were measured (docs/research.md);
# scripts/run.sh asks for 4,800 with --adapter-layers all, which did better there.
TESTBED_ADAPTER_STEPS, TESTBED_ADAPTER_BATCH = 3200, 64
DEFAULT_ADAPTER_RANK, DEFAULT_ADAPTER_LAYERS = 8, "transformer"
# From another checkpoint's adapter (--init-adapter): 25,600 samples met the bar on all three testbed variants on two
# draws of prompts; the same count for --ckpt, as the plan scales the testbed's samples (docs/research.md, the curve).
TESTBED_FINETUNE_STEPS, CKPT_FINETUNE_STEPS = 400, 1600
# The adapter's cfg knob: CFG scales trained over, the map's exponent, and the share of samples at --guidance itself
# (docs/research.md, the controls).
DEFAULT_RANGE, DEFAULT_KNOB_EXPONENT, DEFAULT_ANCHOR_SHARE = "1,10", 0.5, 0.5
# The transformer testbed's adapter learns CFG without guidance over the first fifth of the noise levels: chosen on a
# draw of prompts no bar is scored on, it met the transformer bar in both trainings on two draws (docs/research.md).
TESTBED_DIT_GUIDANCE_INTERVAL = "0,0.8"
TESTBED_SAMPLE_PROMPTS = [
    "a small red circle on the left", "a large blue square at the top", "a yellow triangle in the middle",
    "a green circle to the left of a purple square", "a cyan box above a red triangle", "a big violet disc at the bottom",
]


TESTBEDS = ("unet", "dit", "finetune", "merge", "base+style")
MIXABLE = ("base", "finetune", "merge", "base+style")  # the UNet's variants, one layout


def testbed_choice(text: str) -> str:
    """--testbed's value: one testbed, or two or more of the UNet's variants separated by commas."""
    names = text.split(",")
    if len(names) == 1:
        if text not in TESTBEDS:
            raise argparse.ArgumentTypeError(f"{text!r} is not a testbed: one of {', '.join(TESTBEDS)}, or a mix of "
                                             f"{', '.join(MIXABLE)} separated by commas")
        return text
    wrong = [name for name in names if name not in MIXABLE]
    if wrong or len(set(names)) != len(names):
        not_variants = f" (not {', '.join(map(repr, wrong))})" if wrong else ""
        raise argparse.ArgumentTypeError(f"{text!r}: a mix names two or more different variants of the UNet testbed, "
                                         f"from {', '.join(MIXABLE)}{not_variants}")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python training/train.py",
        description="Distil a DICE sharpener: CFG's effect in the text conditioning, for one UNet call per step.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--testbed", nargs="?", const="unet", type=testbed_choice,
                        help="train on an offline testbed model shipped with the pack: the UNet (the default), the "
                        "flow-matching transformer (dit), one of the UNet's community variants (finetune, merge, "
                        "base+style; python -m training.testbed.community makes them), or a mix of them named with "
                        "commas (base,finetune: each step trains on the next of them, one adapter for the family)")
    source.add_argument("--ckpt", help="a checkpoint: a name in ComfyUI's models/checkpoints or a path")
    source.add_argument("--unet", help="a diffusion model file alone (SD3.5, PixArt and most transformers ship so): a "
                        "name in ComfyUI's models/diffusion_models or a path, with --clip and --vae")
    p.add_argument("--clip", action="append", default=[], help="with --unet: a text encoder file, a name in "
                   "models/text_encoders or a path; once per file (SD3: clip_l, clip_g and optionally t5xxl)")
    p.add_argument("--clip-type", help="with --unet: what the text encoders are for, as CLIPLoader's type "
                   "(stable_diffusion, sd3, pixart, ...; default: the diffusion model's own family)")
    p.add_argument("--vae", help="with --unet: the VAE file, a name in models/vae or a path")
    p.add_argument("--text-embeddings", metavar="FILE", help="with --unet, in place of --clip: the prompts' "
                   "conditioning from a file python training/encode_prompts.py wrote, so the text encoder need not be "
                   "in memory beside the model (Qwen-Image's Qwen2.5-VL 7B)")
    p.add_argument("--data", help="images with .txt captions, a metadata.jsonl, a COCO captions JSON, or a prompts .txt "
                   "(default with --ckpt: the pack's own prompts, training/prompts/sd_prompts.txt)")
    p.add_argument("--comfy-root", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (default: found "
                   "from the pack's place in custom_nodes, or $COMFYUI_PATH)")
    p.add_argument("--out", help="the sharpener file (default: models/sharpeners/<name>.safetensors in ComfyUI, "
                   "else outputs/<name>.safetensors); with --train adapter, the adapter file (default: models/loras/)")
    p.add_argument("--name", help="run name (default: from the checkpoint)")
    p.add_argument("--runs", default=str(PACK_ROOT / "runs"), help="where checkpoints, samples and summaries go")
    p.add_argument("--resume", nargs="?", const="auto", help="continue a run exactly (default: its last checkpoint)")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {CKPT_STEPS}, from --init-adapter "
                   f"{CKPT_FINETUNE_STEPS}; testbed 1200, with an adapter {TESTBED_ADAPTER_STEPS}, from --init-adapter "
                   f"{TESTBED_FINETUNE_STEPS})")
    p.add_argument("--batch", type=int, default=None, help=f"samples per step and process (default {CKPT_BATCH}; testbed 32, "
                   f"with an adapter {TESTBED_ADAPTER_BATCH})")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 2e-4, the paper's; testbed 1e-3)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine", "cooldown"], default="constant",
                   help="constant (the default, as in the paper), a cosine decay to zero by the last step, or "
                   "cooldown: constant, then straight down to zero over the last fifth of the steps")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY", help="write a moving average of the trained "
                   "weights instead of the last step's: the mean of all steps until 1/(1-DECAY) of them, then an "
                   "exponential average over about that many (0.999: the last ~1,000 steps); 0, the default, is off")
    p.add_argument("--guidance", type=float, default=5.0, help="the CFG scale the sharpener learns to imitate; with "
                   "--guidance-range, the scale at the adapter's strength 1")
    p.add_argument("--guidance-range", metavar="LOW,HIGH", help="with an adapter: each sample draws its CFG scale w "
                   "from this range and the adapter learns CFG at every w at the strength its knob gives "
                   f"(--knob-exponent), so one file serves a cfg knob in CFG's own units (default {DEFAULT_RANGE}; "
                   "none: the adapter learns --guidance alone, as before 2026-12)")
    p.add_argument("--knob-exponent", type=float, default=None, help="with --guidance-range: the knob's map from CFG "
                   f"scale w to strength, ((w − 1)/(guidance − 1)) ** this (default {DEFAULT_KNOB_EXPONENT}, the "
                   "testbed's best; 1 = linear)")
    p.add_argument("--knob-sampling-exponent", type=float, default=None, help="with --guidance-range: the knob's "
                   "exponent the file gives the hosts, where it should differ from the one trained with (--knob-exponent):"
                   " below it, the knob gives the adapter more strength under --guidance and less above it, for an "
                   "adapter that guides less than CFG at small scales (default: the trained exponent)")
    p.add_argument("--anchor-share", type=float, default=None, help="with --guidance-range: the share of samples "
                   "trained at --guidance itself (the knob's strength 1), the rest drawn uniformly over the range "
                   f"(default {DEFAULT_ANCHOR_SHARE}; 0: all uniform, as before 2026-12-03)")
    p.add_argument("--extra-anchor", metavar="SCALE,SHARE", help="with --guidance-range: a second CFG scale given its "
                   "own share of the samples, taken from the uniform part (e.g. 8,0.2; default none)")
    p.add_argument("--guidance-interval", metavar="LOW,HIGH", help="the teacher's CFG only at noise levels from LOW to "
                   "HIGH (the model's timestep as a fraction of its largest: 1 is pure noise, 0 clean) and the plain "
                   "prediction elsewhere, as guidance in a limited interval (Kynkäänniemi et al. 2024) runs; e.g. "
                   f"0,0.8 leaves the first fifth of the steps unguided (default: {TESTBED_DIT_GUIDANCE_INTERVAL} for "
                   "the transformer testbed's adapter, else none: CFG at every level)")
    p.add_argument("--nag", metavar="SCALE,TAU,ALPHA", help="with --negatives and an adapter: the negative prompt "
                   "reaches the student's one call through Normalized Attention Guidance with these settings, and the "
                   "adapter learns CFG with that negative (its file records them, and the hosts apply the same NAG)")
    p.add_argument("--negative-share", type=float, default=None, help="with --negatives: the share of samples whose "
                   "reference is a negative prompt, the rest the empty prompt (default 1, the paper's, for a sharpener "
                   "alone; 0.5 with an adapter, which must also serve prompts with no negative)")
    p.add_argument("--loss", choices=["l1", "l2"], default="l1")
    p.add_argument("--negatives", help="a text file of negative prompts, one a line, used in place of the empty prompt")
    p.add_argument("--clip-skip", type=int, default=1, help="as in ComfyUI's CLIP Set Last Layer (2 = skip one)")
    p.add_argument("--resolution", type=int, default=None, help="training image size for --ckpt or --unet, a multiple "
                   "of the VAE's compression (8; 16 for Wan 2.2 5B) (default: the family's own, 512 for SD1.x and SD2 "
                   "eps, 768 for SD2 v, 1024 for SDXL and SD3, PixArt's from its position embedding, 480 for Wan 2.1, "
                   "704 for Wan 2.2 5B)")
    p.add_argument("--frames", type=int, default=None, help="video families (Wan): frames in a training clip, 1 + a "
                   "multiple of 4 (default 17, 5 latent frames)")
    p.add_argument("--save-every", type=int, default=None)
    p.add_argument("--sample-every", type=int, default=None)
    p.add_argument("--eval-batch", type=int, default=64, help="held-out samples for the summary's distance to CFG")
    p.add_argument("--train", choices=["sharpener", "adapter", "both"], default="sharpener",
                   help="what learns CFG: the sharpener (rewrites the text once per prompt), a guidance adapter (a LoRA on "
                        "the model's layers, which sees every step; loads in ComfyUI's LoraLoader and the webuis' <lora:…>), "
                        "or both together")
    p.add_argument("--adapter-rank", type=int, default=None, help="the guidance adapter's LoRA rank (default 8, or the "
                   "--init-adapter file's)")
    p.add_argument("--init-adapter", metavar="FILE", help="with an adapter: start from this adapter file (one trained "
                   "on another checkpoint of the same family, say) rather than from zero; the run takes its rank and "
                   "layers, and its knob must match this run's")
    p.add_argument("--adapter-layers", choices=list(LAYER_SELECTIONS), default=None,
                   help="the layers the adapter changes: every linear layer of the transformer blocks (attention and "
                        "feed-forward: the default, measured on the testbed), the attention projections alone, or all: "
                        "those and a UNet's res-block convolutions (kohya's LoCon layout; on a transformer the same "
                        "layers as the default); with --init-adapter, the file's")
    p.add_argument("--adapter-out", help="the adapter file with --train both (default: models/loras/<name>_adapter"
                   ".safetensors in ComfyUI, else outputs/); with --train adapter, --out names it")
    p.add_argument("--inputs", choices=["forward", "cfg-runs"], default=None,
                   help="the noisy latents the student learns on: forward-noised training latents (the paper's; the "
                        "sharpener's default), or the states CFG's own 10- and 20-step sampling runs visit on the "
                        "training captions (as AGD trains; the adapter's default, which lowered its FD on the testbed; "
                        "about 2 more UNet calls a sample)")
    p.add_argument("--draws-per-state", type=int, default=None,
                   help="with CFG's runs: how many times each state of a run is drawn, on average (default 1); K "
                        "shares a run's calls among K samples, a cheaper run: 4 cost some of the fit on the testbed "
                        "(docs/research.md)")
    p.add_argument("--attention", choices=["prompt+reference", "reference"], default="prompt+reference",
                   help="what the sharpener's attention reads: the prompt's tokens and the reference's, or, as in the "
                        "paper, the reference's alone (collapses to one offset when the empty prompt's tokens are alike)")
    p.add_argument("--mixed-precision", choices=["auto", "fp32", "bf16", "fp16", "no"], default="auto",
                   help="the frozen model's precision: auto is ComfyUI's own pick (fp16 on most GPUs, fp32 on the CPU), "
                        "so the sharpener learns what the KSampler computes; fp16 trains with loss scaling; no = fp32")
    p.add_argument("--micro-batch", type=int, default=0, help="samples per forward and backward pass, gradients "
                   "accumulated over the batch (default: the most that fit in the free memory, measured at start)")
    p.add_argument("--checkpointing", choices=["auto", "on", "off"], default="auto", help="recompute the frozen "
                   "model's layers in the backward pass to save memory (auto: only when one sample would not fit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores, shared among processes)")
    return p.parse_args(argv)


def read_prompt_lines(path: str, what: str) -> list[str]:
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except OSError as error:
        raise SystemExit(f"{what} {path}: cannot be read ({error.strerror or error})")
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise SystemExit(f"{what} {path}: holds no prompts")
    return lines


def testbed_run(args: argparse.Namespace):
    from .testbed.community import load_variant, variant_weights
    from .testbed.model import DENOISER_FILES, DENOISERS, Testbed

    if "," in args.testbed:
        return mix_run(args)
    variant = args.testbed not in DENOISERS
    backend = load_variant(args.testbed) if variant else Testbed.load(DENOISERS[args.testbed])
    if PRECISIONS[args.mixed_precision] is not None:
        backend.set_precision(PRECISIONS[args.mixed_precision])
    dit = args.testbed == "dit"
    name = f"testbed_{args.testbed.replace('+', '_')}" if variant else "testbed_dit" if dit else "testbed"
    info = RunInfo(model_family="testbed-minilm", base_checkpoint="dice-" + name.replace("_", "-"),
                   base_checkpoint_sha256=file_sha256(variant_weights(args.testbed) if variant else DENOISER_FILES[args.testbed]),
                   prediction_type="flow" if dit else "eps")
    return backend, info, name, TESTBED_SAMPLE_PROMPTS


def mix_run(args: argparse.Namespace):
    """The testbed's variants named in --testbed, one after another step by step; the file names them all, and its
    sha256 is of their files' sha256s in that order."""
    import hashlib

    from .testbed.community import VariantMix, mix_checkpoint_name, variant_weights

    names = args.testbed.split(",")
    backend = VariantMix(names)
    if PRECISIONS[args.mixed_precision] is not None:
        backend.set_precision(PRECISIONS[args.mixed_precision])
    checkpoint = mix_checkpoint_name(names)
    name = checkpoint.removeprefix("dice-").replace("-", "_")
    digests = " ".join(file_sha256(variant_weights(n)) for n in names)
    info = RunInfo(model_family="testbed-minilm", base_checkpoint=checkpoint,
                   base_checkpoint_sha256=hashlib.sha256(digests.encode()).hexdigest(), prediction_type="eps")
    return backend, info, name, TESTBED_SAMPLE_PROMPTS


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // world))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # before ComfyUI picks its device
    if not args.unet and (args.clip or args.clip_type or args.vae or args.text_embeddings):
        raise SystemExit("--clip, --clip-type, --text-embeddings and --vae go with --unet (a checkpoint holds its own "
                         "text encoders and VAE)")
    if args.text_embeddings and (args.clip or args.clip_type or args.clip_skip != 1):
        raise SystemExit("--text-embeddings holds what the text encoders gave: give --clip, --clip-type and "
                         "--clip-skip to python training/encode_prompts.py, not with it")
    if args.testbed and args.frames is not None:
        raise SystemExit("--frames goes with --ckpt or --unet of a video model (Wan); the testbeds make images")
    if args.micro_batch < 0:
        raise SystemExit(f"--micro-batch {args.micro_batch}: must be 1 or more (or 0 to pick it from the free memory)")
    if args.testbed:
        backend, info, name, prompts = testbed_run(args)
    else:
        from .comfy_backend import comfy_run

        backend, info, name, prompts = comfy_run(args)
    defaults = run_defaults(args)
    name = args.name or name
    run_dir = Path(args.runs) / name
    out = Path(args.out) if args.out else default_output(args, name, "sharpeners")
    adapter_out = None
    if args.train == "adapter":
        if args.adapter_out:
            raise SystemExit(f"--adapter-out goes with --train both; with --train adapter the adapter is the run's only "
                             f"file: name it with --out {args.adapter_out}")
        adapter_out = Path(args.out) if args.out else default_output(args, f"{name}_adapter", "loras")
    elif args.train == "both":
        adapter_out = Path(args.adapter_out) if args.adapter_out else default_output(args, f"{name}_adapter", "loras")
        if adapter_out.resolve() == out.resolve():
            raise SystemExit(f"--adapter-out {adapter_out}: is also the sharpener's --out; give the two files two names")
    resume = None
    if args.resume:
        resume = run_dir / "checkpoint.pt" if args.resume == "auto" else Path(args.resume)
        if not resume.is_file():
            raise SystemExit(f"--resume: no checkpoint at {resume}")
    negatives = read_prompt_lines(args.negatives, "--negatives") if args.negatives else []
    scales = parse_guidance_range(args)
    init_adapter = check_init_adapter(args, scales)  # before the adapter's shape: a file gives its rank and layers
    args.adapter_rank = DEFAULT_ADAPTER_RANK if args.adapter_rank is None else args.adapter_rank
    args.adapter_layers = args.adapter_layers or DEFAULT_ADAPTER_LAYERS
    if args.adapter_rank < 1:
        raise SystemExit(f"--adapter-rank {args.adapter_rank}: must be 1 or more")
    if args.negative_share is not None and not negatives:
        raise SystemExit("--negative-share goes with --negatives (the share of samples given one of its prompts)")
    if args.negative_share is not None and not 0 < args.negative_share <= 1:
        raise SystemExit(f"--negative-share {args.negative_share:g}: must be above 0 and at most 1")
    nag = parse_nag(args, negatives)
    if not 0 <= args.ema < 1:
        raise SystemExit(f"--ema {args.ema:g}: the average's decay must be at least 0 (off) and below 1, such as 0.999")
    negative_share = args.negative_share if args.negative_share is not None else (1.0 if args.train == "sharpener" else 0.5)
    inputs = args.inputs or ("forward" if args.train == "sharpener" else "cfg-runs")
    config = TrainConfig(
        steps=args.steps or defaults["steps"], batch=args.batch or defaults["batch"],
        lr=args.lr or defaults["lr"], lr_schedule=args.lr_schedule, ema=args.ema,
        guidance=args.guidance, loss=args.loss, seed=args.seed,
        save_every=args.save_every if args.save_every is not None else defaults["save_every"],
        sample_every=args.sample_every if args.sample_every is not None else defaults["sample_every"],
        sample_prompts=prompts, eval_batch=args.eval_batch, negatives=negatives, mixed_precision=args.mixed_precision,
        attention_context=args.attention, train=args.train, adapter_rank=args.adapter_rank,
        adapter_layers=args.adapter_layers, guidance_min=scales[0], guidance_max=scales[1], negative_share=negative_share,
        nag=nag, knob_exponent=DEFAULT_KNOB_EXPONENT if args.knob_exponent is None else args.knob_exponent,
        knob_sampling_exponent=args.knob_sampling_exponent or 0.0,
        anchor_share=(DEFAULT_ANCHOR_SHARE if args.anchor_share is None else args.anchor_share) if scales[1] else 0.0,
        extra_anchor=parse_extra_anchor(args, scales), guidance_interval=parse_guidance_interval(args),
        init_adapter=init_adapter,
        inputs=inputs, draws_per_state=check_draws_per_state(args, inputs), micro_batch=args.micro_batch,
        checkpointing=args.checkpointing, default_steps=defaults["steps"], default_batch=defaults["batch"])
    try:
        # ComfyUI may leave inference mode on; the sharpener needs gradients through the frozen UNet.
        with torch.inference_mode(False):
            return train(config, backend, info, run_dir, out, resume,
                         log=lambda text: print(f"[DICE] {text}", flush=True), adapter_out=adapter_out)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise SystemExit(f"the disk is full ({error.filename or run_dir}); the last checkpoint in {run_dir} "
                             "is intact: free some space and run again with --resume") from None
        raise


def check_draws_per_state(args: argparse.Namespace, inputs: str) -> int:
    """--draws-per-state, which only CFG's runs use."""
    if args.draws_per_state is None:
        return 1
    if inputs != "cfg-runs":
        raise SystemExit(f"--draws-per-state {args.draws_per_state}: only --inputs cfg-runs draws states of runs; "
                         f"this run trains on --inputs {inputs}")
    if args.draws_per_state < 1:
        raise SystemExit(f"--draws-per-state {args.draws_per_state}: must be 1 or more")
    return args.draws_per_state


def run_defaults(args: argparse.Namespace) -> dict:
    """Steps, batch, learning rate and intervals where the flags give none: the settings measured on the testbed."""
    if not args.testbed:
        defaults = {"steps": CKPT_STEPS, "batch": CKPT_BATCH, "lr": 2e-4, "save_every": 500, "sample_every": 500}
    elif args.train == "sharpener":
        defaults = {"steps": 1200, "batch": 32, "lr": 1e-3, "save_every": 200, "sample_every": 400}
    else:  # the adapter's settings measured on the testbed (docs/research.md)
        defaults = {"steps": TESTBED_ADAPTER_STEPS, "batch": TESTBED_ADAPTER_BATCH, "lr": 1e-3, "save_every": 500,
                    "sample_every": 1000}
    if args.init_adapter:  # an adapter that already guides needs a fraction of a run from zero
        defaults["steps"] = TESTBED_FINETUNE_STEPS if args.testbed else CKPT_FINETUNE_STEPS
    return defaults


def check_init_adapter(args: argparse.Namespace, scales: tuple[float, float]) -> str:
    """--init-adapter's path once its file fits the run (rank, layers, knob), or "" without it."""
    if not args.init_adapter:
        return ""
    if args.train == "sharpener":
        raise SystemExit("--init-adapter starts a guidance adapter from a file: add --train adapter (or both)")
    from ..sharpeners.adapter_file import AdapterFileError, load_adapter
    from .loop import range_flag

    try:
        file = load_adapter(args.init_adapter)
    except (AdapterFileError, OSError) as error:
        raise SystemExit(f"--init-adapter: {error}") from None
    info, config = file.info, file.config
    # A run from a file takes its shape unless the flags ask for another, which is refused below.
    args.adapter_rank = config.rank if args.adapter_rank is None else args.adapter_rank
    args.adapter_layers = args.adapter_layers or config.layers
    wanted = {"--adapter-rank": (config.rank, args.adapter_rank), "--adapter-layers": (config.layers, args.adapter_layers),
              "--guidance": (info.guidance_scale, args.guidance),
              "--guidance-range": (range_flag(info.guidance_min, info.guidance_max), range_flag(*scales))}
    if file.has_knob:
        wanted["--knob-exponent"] = (file.trained_knob_exponent, args.knob_exponent if args.knob_exponent is not None
                                     else DEFAULT_KNOB_EXPONENT)
    shown = lambda value: f"{value:g}" if isinstance(value, float) else str(value)  # noqa: E731
    for flag, (was, now) in wanted.items():
        if was != now:
            raise SystemExit(f"--init-adapter {args.init_adapter}: was trained with {flag} {shown(was)}, this run asks "
                             f"for {flag} {shown(now)}; pass {flag} {shown(was)} to start from it")
    return str(args.init_adapter)


def parse_nag(args: argparse.Namespace, negatives: list[str]) -> tuple[float, ...]:
    """--nag SCALE,TAU,ALPHA as NAG's settings, () without it; refused where it cannot mean anything."""
    if not args.nag:
        return ()
    if args.train == "sharpener" or not negatives:
        raise SystemExit("--nag teaches an adapter negative prompts: add --train adapter and --negatives <file>")
    if not args.testbed:
        raise SystemExit("--nag trains on the testbed only: with a checkpoint, train the adapter without it and give "
                         "negative prompts through DICE Negative Prompt (ComfyUI) or the negative prompt box (webuis)")
    from ..sharpeners.nag import NAGSettings

    try:
        settings = NAGSettings(*(float(v) for v in args.nag.split(",")))
    except (TypeError, ValueError) as error:
        raise SystemExit(f"--nag {args.nag}: give NAG's scale, tau and alpha as SCALE,TAU,ALPHA, e.g. 3,2.5,0.5 "
                         f"({error})") from None
    return settings.scale, settings.tau, settings.alpha


def parse_guidance_interval(args: argparse.Namespace) -> tuple[float, ...]:
    """--guidance-interval LOW,HIGH as numbers (the transformer testbed's adapter: 0,0.8 unless given), () without it
    or with none; refused unless 0 <= LOW < HIGH <= 1."""
    if args.guidance_interval is None and args.testbed == "dit" and args.train != "sharpener":
        args.guidance_interval = TESTBED_DIT_GUIDANCE_INTERVAL
    try:
        return parse_interval(args.guidance_interval or "")
    except ValueError as error:
        raise SystemExit(f"--guidance-interval {args.guidance_interval}: {error}") from None


def parse_extra_anchor(args: argparse.Namespace, scales: tuple[float, float]) -> tuple[float, float]:
    """--extra-anchor SCALE,SHARE as numbers, (0, 0) without it; refused where the shares or the scale do not fit."""
    if not args.extra_anchor:
        return 0.0, 0.0
    try:
        scale, share = (float(v) for v in args.extra_anchor.split(","))
    except ValueError:
        raise SystemExit(f"--extra-anchor {args.extra_anchor}: give a CFG scale and its share of the samples as "
                         "SCALE,SHARE, e.g. 8,0.2") from None
    anchor_share = DEFAULT_ANCHOR_SHARE if args.anchor_share is None else args.anchor_share
    if not (scales[0] <= scale <= scales[1] and scale != args.guidance):
        raise SystemExit(f"--extra-anchor {args.extra_anchor}: its scale must lie in --guidance-range "
                         f"{args.guidance_range} and differ from --guidance {args.guidance:g}")
    if not (0 < share and anchor_share + share < 1):
        raise SystemExit(f"--extra-anchor {args.extra_anchor}: its share must be above 0, and with --anchor-share "
                         f"{anchor_share:g} below 1 together")
    return scale, share


def parse_guidance_range(args: argparse.Namespace) -> tuple[float, float]:
    """--guidance-range LOW,HIGH as numbers (default for an adapter: DEFAULT_RANGE), (0, 0) for none; refused where
    it cannot mean anything."""
    knob_flags = {"--guidance-range": args.guidance_range, "--knob-exponent": args.knob_exponent,
                  "--knob-sampling-exponent": args.knob_sampling_exponent,
                  "--anchor-share": args.anchor_share, "--extra-anchor": args.extra_anchor}
    if args.train == "sharpener" and any(v is not None for v in knob_flags.values()):
        flag = next(name for name, v in knob_flags.items() if v is not None)
        raise SystemExit(f"{flag} trains the adapter's cfg knob: add --train adapter (or both)")
    if args.train == "sharpener" or (args.guidance_range or DEFAULT_RANGE).strip().lower() == "none":
        for flag in ("--knob-exponent", "--knob-sampling-exponent", "--anchor-share", "--extra-anchor"):
            if knob_flags[flag] is not None:
                raise SystemExit(f"{flag} goes with a --guidance-range (this run trains one scale, --guidance)")
        return 0.0, 0.0
    args.guidance_range = args.guidance_range or DEFAULT_RANGE
    try:
        low, high = (float(v) for v in args.guidance_range.split(","))
    except ValueError:
        raise SystemExit(f"--guidance-range {args.guidance_range}: give the lowest and highest CFG scale as LOW,HIGH, "
                         "e.g. 1,10") from None
    if not (1 <= low < high and high < 100):
        raise SystemExit(f"--guidance-range {args.guidance_range}: needs 1 <= LOW < HIGH (CFG scales; 1 is the plain model)")
    for flag, exponent in (("--knob-exponent", args.knob_exponent), ("--knob-sampling-exponent", args.knob_sampling_exponent)):
        if exponent is not None and not 0 < exponent <= 4:
            raise SystemExit(f"{flag} {exponent:g}: the knob's exponent must be above 0 and at most 4 (1 = linear)")
    if args.anchor_share is not None and not (0 <= args.anchor_share < 1 and low <= args.guidance <= high):
        raise SystemExit(f"--anchor-share {args.anchor_share:g}: must be at least 0 and below 1, with --guidance "
                         f"{args.guidance:g} inside --guidance-range {args.guidance_range}")
    if not args.guidance > 1:
        raise SystemExit(f"--guidance {args.guidance:g}: with --guidance-range it is the scale at the adapter's strength 1 "
                         "and must be above 1")
    return low, high


def default_output(args: argparse.Namespace, name: str, kind: str) -> Path:
    """ComfyUI's models/<kind>/<name>.safetensors (sharpeners, or loras for an adapter), else the pack's outputs/."""
    from .comfy_locate import find_comfy_root

    root = None if args.testbed else find_comfy_root(args.comfy_root, PACK_ROOT)
    folder = root / "models" / kind if root else PACK_ROOT / "outputs"
    return folder / f"{name}.safetensors"


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
