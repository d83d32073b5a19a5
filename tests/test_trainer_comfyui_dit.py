"""training/train.py on the transformer families, SD3/SD3.5, PixArt-α/Σ, Wan 2.1 and 2.2 5B text-to-video, Chroma,
Lumina 2, AuraFlow and Qwen-Image, in the real ComfyUI: random-weight model files that ComfyUI detects as each family
(tools/make_random_transformer.py), loaded as a checkpoint (SD3.5) or as split files (a diffusion model, text encoders
and a VAE, as UNETLoader, CLIPLoader and VAELoader take them).

Needs COMFYUI_PATH. The T5-XXL, UMT5-XXL, Gemma 2 2B and Pile T5-XL fixtures are full size (4.8, 5.7, 2.6 and 1.2 GB
on disk, up to about 15 GB of memory when ComfyUI loads one on the CPU); set DICE_FIXTURE_MODELS to a folder to build
the fixtures once and keep them between runs.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import PACK_ROOT
from dice_pack.sharpeners import load_sharpener
from dice_pack.sharpeners.adapter_file import load_adapter
from test_comfyui_host import COMFYUI_PATH, comfyui_python

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: no real ComfyUI to load the models with"),
]
# ComfyUI's PixArt cannot run below a 34×34 latent (its position embedding's base size rounds to 0).
PIXART_RESOLUTION = "320"
# Wan's clips: 5 frames (2 latent frames) at 64 px.
WAN_FLAGS = ["--frames", "5"]
WAN_FAMILIES = ("wan21", "wan22_5b")


# Each builder of tools/make_random_transformer.py and a file it writes; and the builders each family's files need
# (Chroma and Lumina 2 take Flux's VAE, which the sd3 builder writes).
FIXTURE_FILES = {"sd3": "checkpoints/tiny_sd3.safetensors", "pixart_alpha": "diffusion_models/tiny_pixart_alpha.safetensors",
                 "pixart_sigma": "diffusion_models/tiny_pixart_sigma.safetensors",
                 "t5xxl": "text_encoders/t5xxl_fp8_e4m3fn.safetensors",
                 "wan21": "diffusion_models/tiny_wan21.safetensors",  # each Wan builder writes it after the VAE
                 "wan22_5b": "diffusion_models/tiny_wan22_5b.safetensors",
                 "umt5xxl": "text_encoders/umt5_xxl_fp8_e4m3fn.safetensors",
                 "chroma": "diffusion_models/tiny_chroma.safetensors",
                 "lumina2": "diffusion_models/tiny_lumina2.safetensors",
                 "gemma2_2b": "text_encoders/gemma_2_2b_fp8_e4m3fn.safetensors",
                 "auraflow": "diffusion_models/tiny_auraflow.safetensors",  # written after its VAE
                 "pile_t5xl": "text_encoders/pile_t5xl_fp8_e4m3fn.safetensors",
                 "qwen_image": "diffusion_models/tiny_qwen_image.safetensors"}  # written after Wan 2.1's VAE
NEEDS = {"sd3": ("sd3", "t5xxl"), "pixart_alpha": ("pixart_alpha", "t5xxl"), "pixart_sigma": ("pixart_sigma", "t5xxl"),
         "wan21": ("wan21", "umt5xxl"), "wan22_5b": ("wan22_5b", "umt5xxl"), "chroma": ("chroma", "t5xxl", "sd3"),
         "lumina2": ("lumina2", "gemma2_2b", "sd3"), "auraflow": ("auraflow", "pile_t5xl"),
         "qwen_image": ("qwen_image",)}
# Qwen2.5-VL 7B, Qwen-Image's text encoder, is not built here (ComfyUI builds it from a fixed config, 7.75 billion
# weights; T5-XXL's 4.8 billion already put a run at 15 GB); its runs take conditioning of its shape from a
# --text-embeddings file instead: 3584 wide, the prompt's words and the 5 tokens of Qwen's chat template that ComfyUI
# keeps after the prompt.
QWEN_WIDTH, QWEN_TEMPLATE_TOKENS = 3584, 5
CHECK_PROMPT = "a red fox in the snow"  # tests/host_checks/teacher_matches_ksampler.py's default prompt


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """The models folder; each test builds the files it needs once (kept between runs in DICE_FIXTURE_MODELS if set)."""
    return Path(os.environ.get("DICE_FIXTURE_MODELS") or tmp_path_factory.mktemp("transformer_models"))


def need(models: Path, family: str) -> Path:
    """models, with the family's fixture files built where they are missing."""
    for builder in NEEDS[family]:
        if not (models / FIXTURE_FILES[builder]).is_file():
            subprocess.run([comfyui_python(Path(COMFYUI_PATH)), str(PACK_ROOT / "tools" / "make_random_transformer.py"),
                            "--comfy-root", COMFYUI_PATH, "--family", builder, "--models", str(models)],
                           check=True, capture_output=True, timeout=1800)
    return models


def sd3_checkpoint(models: Path) -> Path:
    return need(models, "sd3") / "checkpoints" / "tiny_sd3.safetensors"


def prompts(folder: Path) -> Path:
    path = folder / "prompts.txt"
    long = ", ".join(["a lighthouse on a rocky coast at dusk with gulls and spray, oil painting"] * 6)  # > 77 tokens
    path.write_text(f"a red fox\na lighthouse at dusk\na bowl of ramen on a wooden table\n{long}\n")
    return path


def qwen_embeddings(folder: Path) -> Path:
    """A --text-embeddings file of Qwen2.5-VL's shape for the test prompts, the check's prompt and the empty prompt."""
    import torch

    from dice_pack.training.text_embeddings import write_text_embeddings

    generator = torch.Generator().manual_seed(0)
    lines = prompts(folder).read_text().splitlines()
    encoded = {p: {"tensor": torch.randn(1, len(p.split()) + QWEN_TEMPLATE_TOKENS, QWEN_WIDTH, generator=generator)}
               for p in ["", CHECK_PROMPT, *lines]}
    path = folder / "qwen_image_prompts.safetensors"
    write_text_embeddings(path, encoded, "qwen_image", ["qwen_2.5_vl_7b (not built: conditioning of its shape)"])
    return path


def split_flags(models: Path, family: str, folder: Path | None = None) -> list[str]:
    """--unet, --clip (or, for Qwen-Image, --text-embeddings written into folder) and --vae for a family's split files
    (built if missing)."""
    text = need(models, family) / "text_encoders"
    if family == "qwen_image":  # Wan 2.1's VAE layout
        return ["--unet", str(models / "diffusion_models" / "tiny_qwen_image.safetensors"), "--vae",
                str(models / "vae" / "tiny_wan21_vae.safetensors"), "--text-embeddings", str(qwen_embeddings(folder))]
    if family == "sd3":
        clips = [text / "clip_l.safetensors", text / "clip_g.safetensors", text / "t5xxl_fp8_e4m3fn.safetensors"]
        vae = models / "vae" / "tiny_sd3_vae.safetensors"
    elif family in WAN_FAMILIES:  # UMT5-XXL; Wan 2.2 5B has its own 48-channel VAE
        vae = models / "vae" / ("tiny_wan21_vae.safetensors" if family == "wan21" else "tiny_wan22_vae.safetensors")
        clips = [text / "umt5_xxl_fp8_e4m3fn.safetensors"]
    elif family == "chroma":  # Flux's VAE, the layout of SD3's
        clips, vae = [text / "t5xxl_fp8_e4m3fn.safetensors"], models / "vae" / "tiny_sd3_vae.safetensors"
    elif family == "lumina2":  # Gemma 2 2B and Flux's VAE
        clips, vae = [text / "gemma_2_2b_fp8_e4m3fn.safetensors"], models / "vae" / "tiny_sd3_vae.safetensors"
    elif family == "auraflow":  # Pile T5-XL and SDXL's VAE
        clips, vae = [text / "pile_t5xl_fp8_e4m3fn.safetensors"], models / "vae" / "tiny_sd_vae.safetensors"
    else:
        clips, vae = [text / "t5xxl_fp8_e4m3fn.safetensors"], models / "vae" / "tiny_sd_vae.safetensors"
    flags = ["--unet", str(models / "diffusion_models" / f"tiny_{family}.safetensors"), "--vae", str(vae)]
    for clip in clips:
        flags += ["--clip", str(clip)]
    return flags


def run(script: str, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([comfyui_python(Path(COMFYUI_PATH)), str(PACK_ROOT / script), "--comfy-root", COMFYUI_PATH,
                           *args], capture_output=True, text=True, timeout=timeout)


def train_and_check(tmp_path: Path, model_flags: list[str], resolution: str) -> tuple[Path, dict]:
    """A 2-step training run's sharpener, then the host checks on it (teacher, nodes, calls, α = 0)."""
    data, out = prompts(tmp_path), tmp_path / "sharpener.safetensors"
    done = run("training/train.py", *model_flags, "--data", str(data), "--runs", str(tmp_path / "runs"),
               "--resolution", resolution, "--steps", "2", "--batch", "2", "--eval-batch", "2", "--sample-every", "2",
               "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert any((tmp_path / "runs").glob("*/samples/step000002.png"))
    check = run("tests/host_checks/teacher_matches_ksampler.py", *model_flags, "--data", str(data),
                "--runs", str(tmp_path / "check"), "--resolution", resolution, "--sharpener", str(out), "--sampling")
    assert check.returncode == 0, check.stderr[-3000:]
    print(check.stdout.strip().splitlines()[-1])  # the figures, for pytest -rP
    return out, json.loads(check.stdout.strip().splitlines()[-1])


def assert_host_checks(figures: dict, batched_cfg: bool) -> None:
    assert figures["mean_abs_cfg_minus_unguided"] > 1e-3  # guidance changes the prediction, so the check can fail
    assert figures["max_abs_difference"] < 5e-6  # the trainer's teacher is ComfyUI's CFG, fp32
    assert figures["mean_abs_sharpened_minus_unguided"] > 1e-4
    assert figures["sharpened_max_abs_difference"] < 5e-6  # the nodes at cfg 1 give the trainer's student
    for case in figures["cases"]:
        assert case["calls"] == case["steps"] and case["batch_sizes"] == [1], case
    # At cfg 5 ComfyUI batches cond and uncond where their token counts match (SD3), else runs them apart (PixArt).
    assert figures["cfg5_batch_sizes"] == ([2] if batched_cfg else [1])
    assert figures["alpha0_equals_plain"] and figures["alpha1_differs"]


def test_an_sd35_checkpoint_trains_and_its_sharpener_passes_the_host_checks(models, tmp_path):
    checkpoint = sd3_checkpoint(models)
    out, figures = train_and_check(tmp_path, ["--ckpt", str(checkpoint)], "64")
    loaded = load_sharpener(out)
    assert loaded.network.config.embed_dim == 4096
    assert loaded.info.model_family == "sd3" and loaded.info.prediction_type == "flow"
    assert loaded.info.base_checkpoint == "tiny_sd3.safetensors" and len(loaded.info.base_checkpoint_sha256) == 64
    assert figures["family"] == "sd3" and figures["vector_input"]  # the pooled CLIP output reaches the MMDiT as y
    assert_host_checks(figures, batched_cfg=True)


def test_sd35_split_files_with_t5_train_through_comfyuis_loaders(models, tmp_path):
    out, figures = train_and_check(tmp_path, split_flags(models, "sd3"), "64")
    loaded = load_sharpener(out)
    assert loaded.info.model_family == "sd3" and loaded.info.base_checkpoint == "tiny_sd3.safetensors"
    assert_host_checks(figures, batched_cfg=True)


@pytest.mark.parametrize("family", ["pixart_alpha", "pixart_sigma"])
def test_pixart_split_files_train_and_the_sharpener_passes_the_host_checks(models, tmp_path, family):
    out, figures = train_and_check(tmp_path, split_flags(models, family), PIXART_RESOLUTION)
    loaded = load_sharpener(out)
    assert loaded.network.config.embed_dim == 4096
    assert loaded.info.model_family == family and loaded.info.prediction_type == "eps"
    assert loaded.info.base_checkpoint == f"tiny_{family}.safetensors"
    assert figures["family"] == family and not figures["vector_input"]
    assert_host_checks(figures, batched_cfg=False)


def test_split_files_need_their_text_encoders_and_vae_and_bad_names_are_named(models, tmp_path):
    unet = str(need(models, "pixart_alpha") / "diffusion_models" / "tiny_pixart_alpha.safetensors")
    missing = run("training/train.py", "--unet", unet, "--runs", str(tmp_path), timeout=600)
    assert missing.returncode != 0 and "also give its text encoder(s) with --clip" in missing.stderr
    absent = run("training/train.py", "--unet", unet, "--clip", "no_such_t5.safetensors", "--vae", "x.safetensors",
                 "--runs", str(tmp_path), timeout=600)
    assert absent.returncode != 0 and "--clip no_such_t5.safetensors: neither a file nor a name in models/text_encoders" \
        in absent.stderr
    stray = run("training/train.py", "--testbed", "--vae", "x.safetensors", timeout=600)
    assert stray.returncode != 0 and "--clip, --clip-type, --text-embeddings and --vae go with --unet" in stray.stderr


def train_adapter_and_check(tmp_path: Path, model_flags: list[str], resolution: str) -> tuple[Path, dict]:
    """A 2-step adapter training run on CFG's sampling runs (prompts of several token counts), then the host checks on
    its file through the Load DICE Guidance Adapter node."""
    data, out = prompts(tmp_path), tmp_path / "adapter.safetensors"
    done = run("training/train.py", *model_flags, "--train", "adapter", "--data", str(data), "--runs",
               str(tmp_path / "runs"), "--resolution", resolution, "--steps", "2", "--batch", "2", "--eval-batch", "2",
               "--sample-every", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "guidance adapter (rank 8 on" in done.stdout
    check = run("tests/host_checks/teacher_matches_ksampler.py", *model_flags, "--data", str(data),
                "--runs", str(tmp_path / "check"), "--resolution", resolution, "--adapter", str(out), "--sampling")
    assert check.returncode == 0, check.stderr[-3000:]
    assert "lora key not loaded" not in check.stderr
    print(check.stdout.strip().splitlines()[-1])  # the figures, for pytest -rP
    return out, json.loads(check.stdout.strip().splitlines()[-1])


def assert_adapter_host_checks(figures: dict, adapter) -> None:
    assert figures["max_abs_difference"] < 5e-6  # the teacher is ComfyUI's CFG, fp32
    # ComfyUI's own LoRA code matched every layer of the file: one weight patch per adapter layer.
    assert figures["patched_weights"] == figures["adapter_layers"] == len(adapter.names) > 0
    assert figures["mean_abs_adapted_minus_unguided"] > 1e-6  # the trained adapter moves the prediction
    assert figures["adapted_max_abs_difference"] < 5e-6  # the node at cfg 1 gives the trainer's student
    for case in figures["adapter_cases"]:
        assert case["calls"] == case["steps"] and case["batch_sizes"] == [1], case
    assert figures["strength0_equals_plain"] and figures["strength1_differs"]
    # DICE Negative Prompt patches UNet cross-attention only: on a transformer it says so rather than do nothing.
    assert "has no UNet cross-attention to patch" in figures["negative_node_error"]
    # Same layer names, another width (Wan 2.1 1.3B's adapter on Wan 2.2 5B): refused naming the model and the family.
    assert "its layers do not fit this" in figures["other_size_error"]
    assert f"it was trained for {adapter.info.model_family}" in figures["other_size_error"]


def test_an_sd35_checkpoint_trains_an_adapter_that_comfyuis_lora_code_applies_at_one_call_per_step(models, tmp_path):
    out, figures = train_adapter_and_check(tmp_path, ["--ckpt", str(sd3_checkpoint(models))], "64")
    adapter = load_adapter(out)
    assert adapter.info.model_family == "sd3" and adapter.config.layers == "transformer"
    # Both streams of the joint blocks carry it: the image stream's and the context stream's attention.
    assert any("x_block_attn_qkv" in n for n in adapter.names) and any("context_block_attn_qkv" in n for n in adapter.names)
    assert_adapter_host_checks(figures, adapter)


@pytest.mark.parametrize("family", ["pixart_alpha", "pixart_sigma"])
def test_pixart_split_files_train_an_adapter_that_comfyuis_lora_code_applies(models, tmp_path, family):
    out, figures = train_adapter_and_check(tmp_path, split_flags(models, family), PIXART_RESOLUTION)
    adapter = load_adapter(out)
    assert adapter.info.model_family == family
    assert any("cross_attn_kv_linear" in n for n in adapter.names) and any("mlp_fc2" in n for n in adapter.names)
    assert_adapter_host_checks(figures, adapter)


@pytest.mark.parametrize("family", ["wan21", "wan22_5b", "chroma", "lumina2", "auraflow", "qwen_image"])
def test_more_families_train_an_adapter_that_comfyuis_lora_code_applies_at_one_call_per_step(models, tmp_path, family):
    flags = split_flags(models, family, tmp_path) + (WAN_FLAGS if family in WAN_FAMILIES else [])
    out, figures = train_adapter_and_check(tmp_path, flags, "64")
    adapter = load_adapter(out)
    assert adapter.info.model_family == family and adapter.info.prediction_type == "flow"
    assert figures["family"] == family and not figures["vector_input"]
    if family in WAN_FAMILIES:  # a clip: 2 latent frames of 16 channels (Wan 2.2 5B: 48, its VAE compressing 16×)
        assert figures["latent_shape"] == ([16, 2, 8, 8] if family == "wan21" else [48, 2, 4, 4])
        assert any("cross_attn_k" in n for n in adapter.names) and any("ffn_2" in n for n in adapter.names)
    elif family == "chroma":  # both streams of the double block, and the single block
        assert any("txt_attn_qkv" in n for n in adapter.names) and any("single_blocks_0_linear2" in n for n in adapter.names)
    elif family == "lumina2":  # the main layer and the refiners, attention and the gated feed-forward
        assert any("layers_0_attention_qkv" in n for n in adapter.names)
        assert any("context_refiner_0_feed_forward_w3" in n for n in adapter.names)
    elif family == "qwen_image":  # an image in a one-frame video latent; both streams' attention and MLPs
        assert figures["latent_shape"] == [16, 1, 8, 8]
        assert any("attn_add_k_proj" in n for n in adapter.names) and any("txt_mlp_net_2" in n for n in adapter.names)
    else:  # AuraFlow: both streams of the joint block, and the single block
        assert any("double_layers_0_attn_w2q" in n for n in adapter.names)
        assert any("double_layers_0_mlpC_c_proj" in n for n in adapter.names)
        assert any("single_layers_0_mlp_c_proj" in n for n in adapter.names)
    assert_adapter_host_checks(figures, adapter)


@pytest.mark.parametrize("family", ["wan21", "wan22_5b", "chroma", "lumina2", "auraflow", "qwen_image"])
def test_more_families_train_a_sharpener_that_passes_the_host_checks(models, tmp_path, family):
    flags = split_flags(models, family, tmp_path) + (WAN_FLAGS if family in WAN_FAMILIES else [])
    out, figures = train_and_check(tmp_path, flags, "64")
    loaded = load_sharpener(out)
    assert loaded.network.config.embed_dim == {"lumina2": 2304, "auraflow": 2048, "qwen_image": QWEN_WIDTH}.get(family, 4096)
    assert loaded.info.model_family == family
    # UMT5 pads every prompt to 512 tokens and Pile T5 to 256, so Wan and AuraFlow batch cond and uncond; Chroma's T5
    # and Gemma do not pad.
    assert_host_checks(figures, batched_cfg=family in (*WAN_FAMILIES, "auraflow"))


def test_frames_go_with_a_video_model_only(models, tmp_path):
    done = run("training/train.py", "--ckpt", str(sd3_checkpoint(models)), "--frames", "17",
               "--runs", str(tmp_path),
               "--data", str(prompts(tmp_path)), timeout=600)
    assert done.returncode != 0 and "--frames goes with a video model (Wan)" in done.stderr
    bad = run("training/train.py", *split_flags(models, "wan21"), "--frames", "6", "--runs", str(tmp_path),
              "--data", str(prompts(tmp_path)), timeout=600)
    assert bad.returncode != 0 and "--frames 6: must be 1 + a multiple of 4" in bad.stderr


def test_negatives_are_refused_on_a_transformer_by_name(models, tmp_path):
    negatives = tmp_path / "negatives.txt"
    negatives.write_text("blurry\n")
    done = run("training/train.py", "--ckpt", str(sd3_checkpoint(models)), "--train", "adapter",
               "--negatives", str(negatives), "--runs", str(tmp_path), "--data", str(prompts(tmp_path)), timeout=600)
    assert done.returncode != 0 and "--negatives: not for sd3 yet" in done.stderr


def test_prompts_encoded_once_train_as_the_text_encoders_do_and_a_wrong_file_is_named(models, tmp_path):
    """training/encode_prompts.py with SD3's CLIP-L and CLIP-G, then train.py --text-embeddings: the same sharpener,
    weight for weight, as a run that encodes with the text encoders itself."""
    import torch
    from safetensors.torch import load_file

    text = need(models, "sd3") / "text_encoders"
    clips = ["--clip", str(text / "clip_l.safetensors"), "--clip", str(text / "clip_g.safetensors")]
    data, embeddings = prompts(tmp_path), tmp_path / "sd3_prompts.safetensors"
    done = run("training/encode_prompts.py", *clips, "--clip-type", "sd3", "--data", str(data), "--out", str(embeddings))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5 prompts' conditioning (4096 wide)" in done.stdout  # the four of --data and the empty prompt
    model = ["--unet", str(models / "diffusion_models" / "tiny_sd3.safetensors"), "--vae",
             str(models / "vae" / "tiny_sd3_vae.safetensors")]
    trained = {}
    for name, text_flags in (("clip", clips), ("file", ["--text-embeddings", str(embeddings)])):
        trained[name] = tmp_path / f"{name}.safetensors"
        done = run("training/train.py", *model, *text_flags, "--data", str(data), "--runs", str(tmp_path / name),
                   "--resolution", "64", "--steps", "2", "--batch", "2", "--eval-batch", "2", "--out", str(trained[name]))
        assert done.returncode == 0, done.stderr[-3000:]
    from_clip, from_file = load_file(trained["clip"]), load_file(trained["file"])
    assert from_clip.keys() == from_file.keys() and all(torch.equal(from_clip[k], from_file[k]) for k in from_clip)
    # Another family's width, or a prompt the file lacks: named before any training.
    qwen = ["--unet", str(need(models, "qwen_image") / "diffusion_models" / "tiny_qwen_image.safetensors"), "--vae",
            str(models / "vae" / "tiny_wan21_vae.safetensors")]
    wrong = run("training/train.py", *qwen, "--text-embeddings", str(embeddings), "--data", str(data),
                "--runs", str(tmp_path / "wrong"), timeout=600)
    assert wrong.returncode != 0 and "4096-wide conditioning (from sd3 text encoders), but Qwen-Image" in wrong.stderr
    more = tmp_path / "more.txt"
    more.write_text(data.read_text() + "a blue heron\n")
    lacking = run("training/train.py", *model, "--text-embeddings", str(embeddings), "--data", str(more),
                  "--runs", str(tmp_path / "lacking"), timeout=600)
    assert lacking.returncode != 0 and "lacks 1 of the prompts this run needs (the first: 'a blue heron'" in lacking.stderr
