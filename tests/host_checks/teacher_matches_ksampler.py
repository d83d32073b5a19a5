"""Does the trainer's CFG teacher equal what ComfyUI's own sampler computes? Run with ComfyUI's Python.

    python tests/host_checks/teacher_matches_ksampler.py --comfy-root <ComfyUI> --runs <folder> --ckpt <file> --data <d>
    python tests/host_checks/teacher_matches_ksampler.py --comfy-root <ComfyUI> --runs <folder> --unet <file> \
        --clip <file> [--clip <file> ...] --vae <file> --data <d> --resolution 320 --sharpener <file> --sampling

Loads the model as `training/train.py` does with the same model flags (every flag this script does not know goes
to the trainer's parser), then takes one sampler step through comfy.sample.sample_custom with conditioning from
ComfyUI's CLIPTextEncode node (which carries the pooled output), or with --text-embeddings from that file, and
compares CFG's noise prediction there with the trainer's teacher. With --sharpener, also one step at cfg 1 on the
Sharpen Conditioning node's output against the trainer's student; with --sampling too, ComfyUI's common_ksampler
at cfg 1 on that output, counting the model's calls and their batch sizes, and at α = 0 against the plain prompt's
image. With --adapter, the same for a guidance adapter: one step at cfg 1 on the model from the Load DICE Guidance
Adapter node (ComfyUI's own LoRA code) against the trainer's student (the adapter hooked into the model), how many
weights ComfyUI patched, the KSampler's calls at cfg 1 and strength 0 against the plain model's image. Prints one
JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy-root", required=True)
    parser.add_argument("--runs", required=True, help="the trainer's cache folder for this check")
    parser.add_argument("--prompt", default="a red fox in the snow")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--sharpener", help="a sharpener file for this model, to check the nodes' path too")
    parser.add_argument("--adapter", help="a guidance adapter file for this model, to check it through ComfyUI's LoRA code")
    parser.add_argument("--sampling", action="store_true", help="with --sharpener or --adapter: count the KSampler's calls "
                        "at cfg 1 and compare α = 0 (strength 0) with the plain model's image")
    options, model_flags = parser.parse_known_args()

    sys.path.insert(0, str(PACK_ROOT / "training"))
    from train import load_pack

    load_pack()
    import torch

    from dice_pack.training.cli import parse_args
    from dice_pack.training.comfy_backend import comfy_run
    from dice_pack.training.loop import single_call, teacher_noise

    backend, info, _, _ = comfy_run(parse_args([
        *model_flags, "--comfy-root", options.comfy_root, "--runs", options.runs,
        "--resolution", str(options.resolution), "--guidance", str(options.guidance)]))
    import comfy.sample
    import comfy.samplers
    import nodes

    if backend.clip is not None:
        positive = nodes.CLIPTextEncode().encode(backend.clip, options.prompt)[0]
        negative = nodes.CLIPTextEncode().encode(backend.clip, "")[0]
    else:  # --text-embeddings: the file's conditioning, as CLIPTextEncode would output it
        positive, negative = backend.text.conditioning(options.prompt), backend.text.conditioning("")
    sigma = backend.sampling_sigmas(4)[1:2]
    noise = torch.randn((1, *backend.latent_shape), generator=torch.Generator().manual_seed(0))

    def ksampler_eps(conditioning, cfg: float, patcher=backend.patcher) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, eps) of one step of ComfyUI's sampler at σ, with a sampler that only records the model's output."""
        seen = {}

        def one_call(model, x, sigmas, extra_args=None, callback=None, disable=None):
            seen["x"] = x
            seen["denoised"] = model(x, sigmas[0] * x.new_ones(len(x)), **(extra_args or {}))
            return seen["denoised"]

        comfy.sample.sample_custom(patcher, noise, cfg, comfy.samplers.KSAMPLER(one_call),
                                   torch.cat([sigma, sigma.new_zeros(1)]).cpu(), conditioning, negative,
                                   torch.zeros_like(noise), seed=0)
        x = seen["x"].float()
        return x, ((x - seen["denoised"].float()) / sigma.cpu()).cpu()

    x, cfg_eps = ksampler_eps(positive, options.guidance)
    batch = {"x": x.to(backend.device), "sigma": sigma, "c": backend.encode_prompts([options.prompt]),
             "c_ref": backend.encode_prompts([""]), "y": backend.encode_vectors([options.prompt]),
             "y_ref": backend.encode_vectors([""])}
    batch = {k: v for k, v in batch.items() if v is not None}
    with torch.no_grad():
        trainer_eps = teacher_noise(backend, batch, options.guidance).float().cpu()
        unguided = single_call(backend, batch, batch["c"])
    report = {
        "family": info.model_family, "vector_input": "y" in batch, "latent_shape": list(backend.latent_shape),
        "max_abs_difference": float((trainer_eps - cfg_eps).abs().max()),
        "mean_abs_eps": float(cfg_eps.abs().mean()),
        "mean_abs_cfg_minus_unguided": float((cfg_eps - unguided.float().cpu()).abs().mean()),
    }
    if options.sharpener:
        from dice_pack.nodes.sharpen import SharpenConditioning
        from dice_pack.sharpeners import load_sharpener

        sharpener = load_sharpener(options.sharpener)
        sharpened = SharpenConditioning().apply(positive, negative, sharpener, 1.0)[0]
        _, node_eps = ksampler_eps(sharpened, 1.0)
        network = sharpener.network.to(backend.device)
        with torch.no_grad():
            student = single_call(backend, batch, batch["c"] + network(batch["c"], batch["c_ref"])).float().cpu()
        report["sharpened_max_abs_difference"] = float((student - node_eps).abs().max())
        report["mean_abs_sharpened_minus_unguided"] = float((student - unguided.float().cpu()).abs().mean())
        if options.sampling:
            report.update(sampling_report(backend, positive, negative, sharpener, nodes))
    if options.adapter:
        report.update(adapter_report(backend, batch, unguided, positive, negative, Path(options.adapter).resolve(),
                                     ksampler_eps, options.sampling))
    print(json.dumps(report))


def adapter_report(backend, batch, unguided, positive, negative, path, ksampler_eps, sampling: bool) -> dict:
    """The adapter through the Load DICE Guidance Adapter node (ComfyUI's LoRA code) against the trainer's student,
    ComfyUI's weight patches, and with sampling the KSampler's calls at cfg 1 and strength 0 against the plain model."""
    import folder_paths
    import nodes
    import torch

    from dice_pack.nodes.adapter_loader import FOLDER_NAME, LoadDICEAdapter
    from dice_pack.nodes.negative_prompt import DICENegativePrompt
    from dice_pack.sharpeners.adapter_file import load_adapter
    from dice_pack.sharpeners.errors import ConditioningError
    from dice_pack.training.loop import single_call

    adapter = load_adapter(path)
    hooked = adapter.attach_to(backend.model.diffusion_model)  # on the plain weights: ComfyUI has not patched them yet
    with torch.no_grad():
        student = single_call(backend, batch, batch["c"]).float().cpu()
    hooked.detach()
    folder_paths.add_model_folder_path(FOLDER_NAME, str(path.parent))
    adapted = LoadDICEAdapter().load(backend.patcher, path.name, 1.0, 5.0)[0]
    _, node_eps = ksampler_eps(positive, 1.0, adapted)
    report = {"adapter_layers": len(adapter.names), "patched_weights": len(adapted.patches),
              "adapted_max_abs_difference": float((student - node_eps).abs().max()),
              "mean_abs_adapted_minus_unguided": float((student - unguided.float().cpu()).abs().mean())}
    try:
        DICENegativePrompt().patch(adapted, negative)
        report["negative_node_error"] = None
    except ConditioningError as error:
        report["negative_node_error"] = str(error)
    report["other_size_error"] = other_size_error(backend, path)
    if not sampling:
        return report
    batches: list[int] = []
    hook = backend.model.diffusion_model.register_forward_pre_hook(
        lambda module, args: batches.append(int(args[0].shape[0])))
    latent = {"samples": torch.zeros(1, *backend.latent_shape)}
    cases = []
    for sampler, scheduler in (("euler", "simple"), ("dpmpp_2m", "karras")):
        batches.clear()
        nodes.common_ksampler(adapted, 0, 4, 1.0, sampler, scheduler, positive, negative, latent)
        cases.append({"sampler": sampler, "scheduler": scheduler, "steps": 4, "calls": len(batches),
                      "batch_sizes": sorted(set(batches))})
    hook.remove()
    zero = LoadDICEAdapter().load(backend.patcher, path.name, 0.0, 5.0)[0]
    images = [nodes.common_ksampler(m, 7, 3, 1.0, "euler", "simple", positive, negative, latent)[0]["samples"]
              for m in (zero, backend.patcher, adapted)]
    return {**report, "adapter_cases": cases, "strength0_equals_plain": bool(torch.equal(images[0], images[1])),
            "strength1_differs": not torch.equal(images[2], images[1])}


def other_size_error(backend, path) -> str | None:
    """The node's message for an adapter with this one's layer names but another width in its first layer (as one made
    for another model of the same layout: Wan 2.1 1.3B on Wan 2.2 5B), or None if it loaded."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from dice_pack.nodes.adapter_loader import LoadDICEAdapter
    from dice_pack.sharpeners.adapter_file import AdapterFileError

    with safe_open(str(path), "pt") as file:
        tensors, metadata = {k: file.get_tensor(k) for k in file.keys()}, file.metadata()
    down = sorted(k for k in tensors if k.endswith(".lora_down.weight"))[0]
    tensors[down] = torch.cat([tensors[down], tensors[down][:, :1]], dim=1)  # one more input feature
    other = path.with_name("other_size.safetensors")
    save_file(tensors, str(other), metadata=metadata)
    try:
        LoadDICEAdapter().load(backend.patcher, other.name, 1.0, 5.0)
        return None
    except AdapterFileError as error:
        return str(error)


def sampling_report(backend, positive, negative, sharpener, nodes) -> dict:
    """ComfyUI's common_ksampler at cfg 1 on Sharpen Conditioning's output: the model's calls and batch sizes for two
    samplers, and whether α = 0 gives the plain prompt's latent byte for byte."""
    import torch

    from dice_pack.nodes.sharpen import SharpenConditioning

    batches: list[int] = []
    hook = backend.model.diffusion_model.register_forward_pre_hook(
        lambda module, args: batches.append(int(args[0].shape[0])))
    latent = {"samples": torch.zeros(1, *backend.latent_shape)}
    sharpened = SharpenConditioning().apply(positive, negative, sharpener, 1.0)[0]
    cases = []
    for sampler, scheduler in (("euler", "simple"), ("dpmpp_2m", "karras")):
        batches.clear()
        nodes.common_ksampler(backend.patcher, 0, 4, 1.0, sampler, scheduler, sharpened, negative, latent)
        cases.append({"sampler": sampler, "scheduler": scheduler, "steps": 4, "calls": len(batches),
                      "batch_sizes": sorted(set(batches))})
    batches.clear()
    nodes.common_ksampler(backend.patcher, 0, 2, 5.0, "euler", "simple", positive, negative, latent)
    cfg_batches = sorted(set(batches))
    hook.remove()
    unguided = SharpenConditioning().apply(positive, negative, sharpener, 0.0)[0]
    zero = nodes.common_ksampler(backend.patcher, 7, 3, 1.0, "euler", "simple", unguided, negative, latent)[0]["samples"]
    plain = nodes.common_ksampler(backend.patcher, 7, 3, 1.0, "euler", "simple", positive, negative, latent)[0]["samples"]
    guided = nodes.common_ksampler(backend.patcher, 7, 3, 1.0, "euler", "simple", sharpened, negative, latent)[0]["samples"]
    return {"cases": cases, "cfg5_batch_sizes": cfg_batches, "alpha0_equals_plain": bool(torch.equal(zero, plain)),
            "alpha1_differs": not torch.equal(guided, plain)}


if __name__ == "__main__":
    main()
