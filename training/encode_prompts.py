"""Encode a run's prompts once with the model's text encoders, into a file train.py reads with --text-embeddings:

    python training/encode_prompts.py --clip qwen_2.5_vl_7b_fp8_scaled.safetensors --clip-type qwen_image \\
        --data prompts.txt --out qwen_image_prompts.safetensors

Every prompt of --data is encoded, and the empty prompt (CFG's reference), as ComfyUI's CLIPTextEncode encodes them.
The trainer then loads the diffusion model without its text encoder (--unet ... --vae ... --text-embeddings
qwen_image_prompts.safetensors --data prompts.txt), so the two never share memory.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import load_pack  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python training/encode_prompts.py", description=__doc__.splitlines()[0])
    p.add_argument("--clip", action="append", required=True, help="a text encoder file, a name in ComfyUI's "
                   "models/text_encoders or a path; once per file, as for train.py --unet")
    p.add_argument("--clip-type", required=True, help="what the text encoders are for, as CLIPLoader's type "
                   "(qwen_image, sd3, pixart, wan, lumina2, ...)")
    p.add_argument("--data", help="the run's --data: images with .txt captions, a metadata.jsonl, a COCO captions "
                   "JSON, or a prompts .txt (default: the pack's own prompts, training/prompts/sd_prompts.txt)")
    p.add_argument("--out", required=True, help="the embeddings file to write (.safetensors)")
    p.add_argument("--clip-skip", type=int, default=1, help="as in ComfyUI's CLIP Set Last Layer (2 = skip one)")
    p.add_argument("--comfy-root", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (default: found "
                   "from the pack's place in custom_nodes, or $COMFYUI_PATH)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    load_pack()
    from dice_pack.training.comfy_backend import SHIPPED_PROMPTS, import_comfy
    from dice_pack.training.comfy_locate import find_comfy_root
    from dice_pack.training.comfy_models import load_text_encoders, resolve_model_file
    from dice_pack.training.datasets import DatasetError, load_examples
    from dice_pack.training.progress import Progress
    from dice_pack.training.text_embeddings import encode_with_clip, write_text_embeddings

    args = parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise SystemExit(f"--out {out}: name a .safetensors file")
    root = find_comfy_root(args.comfy_root, Path(__file__).resolve().parents[1])
    if root is None:
        raise SystemExit("no ComfyUI found: run this from ComfyUI/custom_nodes/<this pack>, or pass --comfy-root, "
                         "or set COMFYUI_PATH")
    try:
        examples = load_examples(args.data or SHIPPED_PROMPTS)
    except DatasetError as error:
        raise SystemExit(str(error)) from None
    comfy = import_comfy(root)
    files = [resolve_model_file(name, "text_encoders", "--clip", comfy["folder_paths"]) for name in args.clip]
    clip = load_text_encoders(files, args.clip_type, comfy)
    if args.clip_skip > 1:
        clip.clip_layer(-args.clip_skip)
    prompts = list(dict.fromkeys(["", *(e.caption for e in examples)]))
    progress = Progress(len(prompts), "encoding prompts", "prompts")
    encoded = {}
    for done, prompt in enumerate(prompts, 1):
        encoded[prompt] = encode_with_clip(clip, prompt)
        progress.update(done)
    write_text_embeddings(out, encoded, args.clip_type, [f.name for f in files])
    print(f"[DICE] {len(prompts)} prompts' conditioning ({encoded['']['tensor'].shape[-1]} wide) in {out}")
    return out


if __name__ == "__main__":
    main()
