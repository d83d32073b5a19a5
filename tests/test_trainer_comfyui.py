"""training/train.py on real ComfyUI checkpoints (random-weight SD1.5 and SDXL layouts), through ComfyUI's own loader.

Needs COMFYUI_PATH; the trainer runs with COMFYUI_PYTHON (or a venv inside the ComfyUI folder).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import PACK_ROOT
from dice_pack.sharpeners import load_sharpener
from dice_pack.sharpeners.adapter_file import load_adapter
from dice_pack.training.cli import CKPT_BATCH, CKPT_STEPS
from dice_pack.training.png import save_png
from test_comfyui_host import COMFYUI_PATH, comfyui_python

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: no real ComfyUI to load a checkpoint with"),
]


def random_checkpoint(folder: Path, layout: str):
    root = Path(COMFYUI_PATH).resolve()
    python = comfyui_python(root)
    checkpoint = folder / f"tiny_{layout}.safetensors"
    subprocess.run([python, str(PACK_ROOT / "tools" / "make_random_checkpoint.py"), "--comfy-root", str(root),
                    "--layout", layout, "--out", str(checkpoint)], check=True, capture_output=True)
    return root, python, folder, checkpoint


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("comfy_training"), "sd15")


@pytest.fixture(scope="module")
def comfy_sdxl(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("comfy_training_sdxl"), "sdxl")


def train(comfy, *args, timeout=900):
    root, python, folder, _ = comfy
    return subprocess.run([python, str(PACK_ROOT / "training" / "train.py"), "--comfy-root", str(root),
                           "--runs", str(folder / "runs"), "--resolution", "64", "--sample-every", "0", *args],
                          capture_output=True, text=True, timeout=timeout)


def ksampler_check(comfy, data: Path, sharpener: Path | None = None, adapter: Path | None = None) -> dict:
    """tests/host_checks/teacher_matches_ksampler.py's figures for the fixture checkpoint."""
    root, python, folder, checkpoint = comfy
    extra = (["--sharpener", str(sharpener)] if sharpener else []) + (["--adapter", str(adapter)] if adapter else [])
    done = subprocess.run([python, str(PACK_ROOT / "tests" / "host_checks" / "teacher_matches_ksampler.py"),
                           "--comfy-root", str(root), "--ckpt", str(checkpoint), "--data", str(data),
                           "--runs", str(folder / "check_runs"), *extra], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def captioned_folder(folder: Path) -> Path:
    data = folder / "data" / "3_things"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(3):
        save_png(data / f"image{index}.png", rng.integers(0, 256, (80, 96, 3), dtype=np.uint8))
        (data / f"image{index}.txt").write_text(f"a photo of thing number {index}")
    (data / "broken.png").write_bytes(b"not an image")
    (data / "broken.txt").write_text("a broken file")
    (data / "uncaptioned.png").write_bytes((data / "image0.png").read_bytes())
    return folder / "data"


def test_a_captioned_folder_trains_saves_and_the_file_loads_in_the_nodes(comfy):
    _, _, folder, checkpoint = comfy
    out = folder / "tiny_sd15_dice.safetensors"
    done = train(comfy, "--ckpt", str(checkpoint), "--data", str(captioned_folder(folder)), "--steps", "2",
                 "--batch", "2", "--clip-skip", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "broken.png: not a readable image" in done.stderr
    assert "uncaptioned.png: no caption file" in done.stderr
    loaded = load_sharpener(out)
    assert loaded.network.config.embed_dim == 768
    assert loaded.info.model_family == "sd15" and loaded.info.base_checkpoint == "tiny_sd15.safetensors"
    assert loaded.info.clip_skip == 2 and loaded.info.prediction_type == "eps"


def prompts_file(folder: Path) -> Path:
    prompts = folder / "prompts.txt"
    long = ", ".join(["a lighthouse on a rocky coast at dusk with gulls and spray, oil painting"] * 6)  # > 75 tokens
    prompts.write_text(f"a red fox\na lighthouse at dusk\n{long}\n")
    return prompts


def test_prompts_only_makes_its_own_training_latents(comfy):
    _, _, folder, checkpoint = comfy
    prompts = prompts_file(folder)
    out = folder / "from_prompts.safetensors"
    done = train(comfy, "--ckpt", str(checkpoint), "--data", str(prompts), "--steps", "1", "--batch", "2",
                 "--name", "prompts", "--out", str(out), "--sample-every", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_sharpener(out).info.training_steps == 1
    cache = folder / "runs" / "prompts" / "cache"
    # The long prompt (154 tokens) was drawn with CFG against the empty prompt's 77, trained on, and sampled.
    assert len(list((cache / "latents").glob("*.safetensors"))) == 3
    assert len(list((cache / "text").glob("*.safetensors"))) == 4  # the three prompts and the empty one
    assert (folder / "runs" / "prompts" / "samples" / "step000001.png").is_file()


def test_with_no_data_it_plans_then_trains_on_the_shipped_prompts_drawing_only_what_it_uses(comfy):
    _, _, folder, checkpoint = comfy
    out = folder / "no_data.safetensors"
    done = train(comfy, "--ckpt", str(checkpoint), "--steps", "2", "--batch", "2", "--eval-batch", "2",
                 "--name", "no_data", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no --data: training on the pack's own prompts (sd_prompts.txt)" in done.stdout
    for line in ("plan: 2 steps × 2 samples × 1 process(es) = 4 samples", "memory: one sample adds",
                 "estimated time for this run", f"the default run ({CKPT_STEPS:,} steps × {CKPT_BATCH}) would take"):
        assert line in done.stdout, done.stdout
    assert load_sharpener(out).info.training_steps == 2
    # Of the 3,000 prompts, only those a step, the warm-up or the held-out batch used were drawn and cached.
    drawn = list((folder / "runs" / "no_data" / "cache" / "latents").glob("*.safetensors"))
    assert 1 <= len(drawn) <= 1 + 2 + 2 + 2 * 2


def test_the_teacher_is_the_ksamplers_cfg(comfy):
    _, _, folder, _ = comfy
    figures = ksampler_check(comfy, captioned_folder(folder))
    assert figures["family"] == "sd15" and not figures["vector_input"]
    assert figures["mean_abs_cfg_minus_unguided"] > 1e-3  # guidance changes eps, so the comparison can fail
    assert figures["max_abs_difference"] < 1e-4


def test_sdxl_trains_with_pooled_and_size_inputs_and_the_nodes_give_the_students_prediction(comfy_sdxl):
    _, _, folder, checkpoint = comfy_sdxl
    prompts = prompts_file(folder)
    out = folder / "tiny_sdxl_dice.safetensors"
    done = train(comfy_sdxl, "--ckpt", str(checkpoint), "--data", str(prompts), "--steps", "2", "--batch", "2",
                 "--eval-batch", "4", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = load_sharpener(out)
    assert loaded.network.config.embed_dim == 2048 and loaded.info.model_family == "sdxl"
    figures = ksampler_check(comfy_sdxl, prompts, sharpener=out)
    assert figures["vector_input"]
    assert figures["mean_abs_cfg_minus_unguided"] > 1e-3
    assert figures["max_abs_difference"] < 1e-4
    # The nodes at cfg 1 (pooled output passed through) give exactly the trainer's student prediction.
    assert figures["mean_abs_sharpened_minus_unguided"] > 1e-3
    assert figures["sharpened_max_abs_difference"] < 1e-4


@pytest.mark.parametrize(("make", "message"), [
    (lambda folder: folder / "absent.safetensors", "neither a file nor a name in models/checkpoints"),
    (lambda folder: (folder / "bad.safetensors").write_bytes(b"\0" * 64) and folder / "bad.safetensors",
     "ComfyUI cannot load it"),
])
def test_a_checkpoint_comfyui_cannot_read_is_named(comfy, make, message):
    _, _, folder, _ = comfy
    done = train(comfy, "--ckpt", str(make(folder)), "--data", str(folder), "--steps", "1", timeout=300)
    assert done.returncode != 0 and message in done.stderr


def test_an_inpainting_checkpoint_is_refused_by_name(tmp_path):
    comfy = random_checkpoint(tmp_path, "sd15-inpaint")
    done = train(comfy, "--ckpt", str(comfy[3]), "--data", str(captioned_folder(tmp_path)), "--steps", "1", timeout=300)
    assert done.returncode != 0
    assert "tiny_sd15-inpaint.safetensors: an inpainting SD15 model" in done.stderr


def test_no_comfyui_found_is_a_clear_error(tmp_path):
    done = subprocess.run([comfyui_python(Path(COMFYUI_PATH)), str(PACK_ROOT / "training" / "train.py"),
                           "--ckpt", "model.safetensors", "--data", str(tmp_path)],
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"})
    assert done.returncode != 0 and "no ComfyUI found" in done.stderr


def test_a_ksampler_at_cfg_one_on_sharpened_conditioning_makes_one_call_of_batch_one_per_step(comfy, tmp_path):
    from dice_pack.sharpeners import Sharpener, SharpenerConfig, TrainingInfo, save_sharpener

    root, python, _, checkpoint = comfy
    sharpener = tmp_path / "random_sd15.safetensors"
    save_sharpener(sharpener, Sharpener(SharpenerConfig(embed_dim=768)), TrainingInfo(base_checkpoint="tiny_sd15"))

    def counted(*args):
        done = subprocess.run([python, str(PACK_ROOT / "tests" / "host_checks" / "calls_per_step.py"),
                               "--comfy-root", str(root), "--ckpt", str(checkpoint), "--sharpener", str(sharpener),
                               *args], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])["cases"]

    cases = counted()
    assert {(c["sampler"], c["scheduler"]) for c in cases} >= {("euler", "normal"), ("dpmpp_2m", "normal"),
                                                                ("dpmpp_2m", "karras")}
    for case in cases:
        assert case["calls"] == case["steps"] and case["batch_sizes"] == [1], case
    # The count sees guidance: at cfg 5 the same graph batches the negative into every call.
    assert counted("--cfg", "5", "--cases", "euler:normal")[0]["batch_sizes"] == [2]


def test_a_trained_adapter_loads_through_comfyuis_lora_code_and_samples_at_one_call_of_batch_one_per_step(comfy):
    root, python, folder, checkpoint = comfy
    adapter = folder / "loras" / "tiny_sd15_dice_adapter.safetensors"
    done = train(comfy, "--ckpt", str(checkpoint), "--data", str(prompts_file(folder)), "--train", "adapter",
                 "--steps", "2", "--batch", "2", "--name", "adapter_run", "--out", str(adapter),
                 "--guidance-range", "1,10")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "guidance adapter (rank 8 on" in done.stdout and "transformer layers" in done.stdout
    loaded = load_adapter(adapter)
    assert loaded.info.model_family == "sd15" and loaded.info.base_checkpoint == checkpoint.name
    assert len(loaded.info.base_checkpoint_sha256) == 64 and loaded.info.guidance_scale == 5.0
    assert (loaded.info.guidance_min, loaded.info.guidance_max) == (1.0, 10.0)
    assert oct(adapter.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    run = subprocess.run([python, str(PACK_ROOT / "tests" / "host_checks" / "calls_per_step.py"),
                          "--comfy-root", str(root), "--ckpt", str(checkpoint), "--adapter", str(adapter)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    # ComfyUI's own LoRA code matched every layer of the file: one weight patch per adapter layer.
    assert report["patched_weights"] == report["adapter_layers"] == len(loaded.names) > 0
    assert "lora key not loaded" not in run.stderr
    assert "trained for another checkpoint" not in run.stderr  # the weights it recorded are this checkpoint's
    assert {(c["sampler"], c["scheduler"]) for c in report["cases"]} >= {("euler", "normal"), ("dpmpp_2m", "normal"),
                                                                          ("dpmpp_2m", "karras")}
    for case in report["cases"]:
        assert case["calls"] == case["steps"] and case["batch_sizes"] == [1], case
    # The cfg knob and a negative prompt (DICE Negative Prompt) keep it at one call of batch 1 per step.
    run = subprocess.run([python, str(PACK_ROOT / "tests" / "host_checks" / "calls_per_step.py"),
                          "--comfy-root", str(root), "--ckpt", str(checkpoint), "--adapter", str(adapter),
                          "--adapter-cfg", "7", "--negative", "blurry, watermark", "--cases", "euler:normal,dpmpp_2m:karras"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["negative_patches"] > 0 and report["patched_weights"] == len(loaded.names)
    for case in report["cases"]:
        assert case["calls"] == case["steps"] and case["batch_sizes"] == [1], case
    # On another checkpoint of the family it still loads, and the log names the checkpoint it was trained for.
    other = folder / "other_sd15.safetensors"
    subprocess.run([python, str(PACK_ROOT / "tools" / "make_random_checkpoint.py"), "--comfy-root", str(root),
                    "--seed", "1", "--out", str(other)], check=True, capture_output=True)
    run = subprocess.run([python, str(PACK_ROOT / "tests" / "host_checks" / "calls_per_step.py"),
                          "--comfy-root", str(root), "--ckpt", str(other), "--adapter", str(adapter),
                          "--cases", "euler:normal"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (f"was trained for another checkpoint, {checkpoint.name} (sha256 "
            f"{loaded.info.base_checkpoint_sha256[:12]})") in run.stderr
    case = json.loads(run.stdout.strip().splitlines()[-1])["cases"][0]
    assert case["calls"] == case["steps"] and case["batch_sizes"] == [1], case


def test_an_adapter_on_the_res_blocks_convolutions_too_loads_through_comfyuis_lora_code_as_trained(comfy):
    """--adapter-layers all: kohya's LoCon pairs on the res-blocks' convolutions, which ComfyUI's LoRA code merges into
    the weights to give the prediction the trainer's hooks gave."""
    root, python, folder, checkpoint = comfy
    adapter = folder / "all_layers_adapter.safetensors"
    done = train(comfy, "--ckpt", str(checkpoint), "--data", str(prompts_file(folder)), "--train", "adapter",
                 "--adapter-layers", "all", "--steps", "2", "--batch", "2", "--name", "all_layers", "--out", str(adapter))
    assert done.returncode == 0, done.stderr[-3000:]
    assert " all layers)" in done.stdout
    loaded = load_adapter(adapter)
    convs = [n for n in loaded.names if loaded.tensors[f"{n}.lora_down.weight"].ndim == 4]
    assert convs and all(n.endswith(("_in_layers_2", "_out_layers_3")) for n in convs)
    figures = ksampler_check(comfy, prompts_file(folder), adapter=adapter)
    assert figures["patched_weights"] == figures["adapter_layers"] == len(loaded.names)
    assert figures["mean_abs_adapted_minus_unguided"] > 1e-6  # the trained adapter moves the prediction
    assert figures["adapted_max_abs_difference"] < 5e-6  # the node at cfg 1 gives the trainer's student
    # The file's first layer, a convolution, one input channel wider: the node names the misfit before the loader.
    assert sorted(loaded.names)[0] in convs and "its layers do not fit this" in figures["other_size_error"]


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
