"""training/train.py on a real ComfyUI checkpoint (a random-weight SD1.5 layout), through ComfyUI's own loader.

Needs COMFYUI_PATH; the trainer runs with COMFYUI_PYTHON (or a venv inside the ComfyUI folder).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import PACK_ROOT
from dice_pack.sharpeners import load_sharpener
from dice_pack.training.png import save_png
from test_comfyui_host import COMFYUI_PATH, comfyui_python

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: no real ComfyUI to load a checkpoint with"),
]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    root = Path(COMFYUI_PATH).resolve()
    python = comfyui_python(root)
    folder = tmp_path_factory.mktemp("comfy_training")
    checkpoint = folder / "tiny_sd15.safetensors"
    subprocess.run([python, str(PACK_ROOT / "tools" / "make_random_sd15.py"), "--comfy-root", str(root),
                    "--out", str(checkpoint)], check=True, capture_output=True)
    return root, python, folder, checkpoint


def train(comfy, *args, timeout=900):
    root, python, folder, _ = comfy
    return subprocess.run([python, str(PACK_ROOT / "training" / "train.py"), "--comfy-root", str(root),
                           "--runs", str(folder / "runs"), "--resolution", "64", "--sample-every", "0", *args],
                          capture_output=True, text=True, timeout=timeout)


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


def test_prompts_only_makes_its_own_training_latents(comfy):
    _, _, folder, checkpoint = comfy
    prompts = folder / "prompts.txt"
    prompts.write_text("a red fox\na lighthouse at dusk\n")
    out = folder / "from_prompts.safetensors"
    done = train(comfy, "--ckpt", str(checkpoint), "--data", str(prompts), "--steps", "1", "--batch", "2",
                 "--name", "prompts", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_sharpener(out).info.training_steps == 1
    cache = folder / "runs" / "prompts" / "cache"
    assert len(list((cache / "latents").glob("*.safetensors"))) == 2
    assert len(list((cache / "text").glob("*.safetensors"))) == 3  # the two prompts and the empty one


@pytest.mark.parametrize(("make", "message"), [
    (lambda folder: folder / "absent.safetensors", "neither a file nor a name in models/checkpoints"),
    (lambda folder: (folder / "bad.safetensors").write_bytes(b"\0" * 64) and folder / "bad.safetensors",
     "ComfyUI cannot load it"),
])
def test_a_checkpoint_comfyui_cannot_read_is_named(comfy, make, message):
    _, _, folder, _ = comfy
    done = train(comfy, "--ckpt", str(make(folder)), "--data", str(folder), "--steps", "1", timeout=300)
    assert done.returncode != 0 and message in done.stderr


def test_no_comfyui_found_is_a_clear_error(tmp_path):
    done = subprocess.run([comfyui_python(Path(COMFYUI_PATH)), str(PACK_ROOT / "training" / "train.py"),
                           "--ckpt", "model.safetensors", "--data", str(tmp_path)],
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"})
    assert done.returncode != 0 and "no ComfyUI found" in done.stderr
