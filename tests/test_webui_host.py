"""The extension inside the real Automatic1111 and Forge: script-info, txt2img and img2img through the API, one UNet
call of batch 1 per step, exact α = 0, negative prompts, settings left as they were, refused files.

Needs A1111_PATH (an Automatic1111 v1.10 checkout) and A1111_PYTHON (the Python that runs it), or FORGE_PATH and
FORGE_PYTHON; each host starts on the CPU with a temporary data dir holding this extension, a test-only call counter
(tests/host_checks/webui_call_counter) and a random-weight SD1.5 checkpoint from tools/make_webui_checkpoint.py.
Automatic1111 reads CLIP-L's tokenizer from the Hugging Face cache ($HF_HOME): see docs/developers.md.
"""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_bad_adapters, save_random_adapter
from dice_pack.sharpeners import Sharpener, SharpenerConfig, TrainingInfo, save_sharpener
from dice_pack.tools import webui_host
from dice_pack.webui.glue import TITLE

HOSTS = {"a1111": ("A1111_PATH", "A1111_PYTHON"), "forge": ("FORGE_PATH", "FORGE_PYTHON")}
pytestmark = pytest.mark.host
STEPS = 3
PROMPT = {"prompt": "a red fox in the snow", "negative_prompt": "", "steps": STEPS, "width": 64, "height": 64,
          "cfg_scale": 1, "sampler_name": "Euler", "seed": 1, "batch_size": 1}


class Host:
    """The running host, with each generation's UNet calls recorded by the test-only counter."""

    def __init__(self, webui: webui_host.WebUI) -> None:
        self.webui, self.kind = webui, webui.kind

    def call(self, path: str, body: dict | None = None):
        return self.webui.call(path, body)

    def calls(self) -> list[int]:
        """The batch size of every UNet call since the last time this was asked."""
        return self.webui.call("/dice-test/calls")["batch_sizes"]

    def generate(self, dice: list | None = None, endpoint: str = "txt2img", **changes):
        self.calls()
        return self.webui.generate(dice, endpoint, **{**PROMPT, **changes})


def changed(image: np.ndarray, reference: np.ndarray) -> bool:
    """Visibly different: a random-weight UNet listens to its text only a little, so the bar is low but not zero."""
    return np.abs(image.astype(int) - reference.astype(int)).mean() > 0.05


def save_random(path: Path, width: int = 768) -> None:
    torch.manual_seed(0)
    save_sharpener(path, Sharpener(SharpenerConfig(embed_dim=width)), TrainingInfo(base_checkpoint="random_sd15"))


@pytest.fixture(scope="module", params=list(HOSTS))
def webui(request, tmp_path_factory):
    kind = request.param
    path_variable, python_variable = HOSTS[kind]
    if not os.environ.get(path_variable) or not os.environ.get(python_variable):
        pytest.skip(f"{path_variable} and {python_variable} are not both set: no real {kind} host to test in")
    data = tmp_path_factory.mktemp(f"{kind}_data")
    sharpeners = webui_host.prepare_data_dir(data, with_counter=True)
    save_random(sharpeners / "random_sd15.safetensors")
    save_random(sharpeners / "sdxl_width.safetensors", width=2048)
    (sharpeners / "hostile.safetensors").write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    loras = data / "models" / "Lora"
    save_random_adapter(data / "models" / "Stable-diffusion" / "random_sd15.safetensors",
                        loras / "random_sd15_dice_adapter.safetensors")
    save_random_adapter(data / "models" / "Stable-diffusion" / "random_sd15.safetensors",
                        loras / "other_sd15_dice_adapter.safetensors", trained_for=("dreamshaper_8.safetensors", "ab" * 32))
    save_random_adapter(data / "models" / "Stable-diffusion" / "random_sd15.safetensors",
                        loras / "res_blocks_sd15_dice_adapter.safetensors", convolutions=True)
    make_bad_adapters(loras)
    try:
        started = webui_host.start(kind, Path(os.environ[path_variable]).resolve(), os.environ[python_variable], data,
                                   counting=True)
    except RuntimeError as error:
        pytest.fail(str(error))
    yield Host(started)
    started.stop()


def test_the_api_lists_the_sharpeners_the_dropdown_offers(webui):
    listed = webui.call("/dice/v1/sharpeners")
    assert listed["sharpeners"] == ["hostile.safetensors", "random_sd15.safetensors", "sdxl_width.safetensors"]
    assert listed["folder"].endswith("models/sharpeners")


def test_script_info_lists_the_accordion_with_its_inputs_in_order(webui):
    found = [s for s in webui.call("/sdapi/v1/script-info") if s["name"] == TITLE.lower()]
    assert {s["is_img2img"] for s in found} == {False, True}
    labels = [a["label"] for a in found[0]["args"]]
    assert labels[1:] == ["Sharpener", "Sharpening α", "Negative shift β", "Adapter guidance (CFG scale)",
                          "Adapter negative prompt strength"], labels


def test_dice_makes_one_call_of_batch_one_per_step_and_leaves_the_settings_as_they_were(webui):
    before = webui.call("/sdapi/v1/options")["skip_early_cond"]
    images, info = webui.generate([True, "random_sd15.safetensors", 1.0, 0.5])
    assert len(images) == 1
    assert webui.calls() == [1] * STEPS
    text = info["infotexts"][0]
    assert "DICE sharpener: random_sd15.safetensors" in text and "DICE alpha: 1" in text
    assert "Skip Early CFG" not in text  # pasting it back would drop the negative pass at CFG > 1 too
    assert webui.call("/sdapi/v1/options")["skip_early_cond"] == before


def test_alpha_zero_gives_exactly_the_plain_cfg_one_image_and_alpha_one_changes_it(webui):
    # Plain CFG 1 with the negative pass dropped, as DICE runs it (the key exists now: it is restored afterwards).
    plain = webui.generate(override_settings={"skip_early_cond": 1.0})[0][0]
    at_zero = webui.generate([True, "random_sd15.safetensors", 0.0, 0.5])[0][0]
    at_one = webui.generate([True, "random_sd15.safetensors", 1.0, 0.5])[0][0]
    assert np.array_equal(at_zero, plain)
    assert changed(at_one, plain)


def test_a_negative_prompt_changes_the_image_at_cfg_one(webui):
    dice = [True, "random_sd15.safetensors", 1.0, 0.5]
    without = webui.generate(dice)[0][0]
    with_negative, info = webui.generate(dice, negative_prompt="blurry, watermark, text")
    assert changed(with_negative[0], without)
    assert "DICE beta: 0.5" in info["infotexts"][0]
    assert webui.calls() == [1] * STEPS  # the negative prompt works through the conditioning, not a second pass


def test_batches_and_prompts_with_and_parts_and_editing_still_make_one_call_per_step(webui):
    images, _ = webui.generate([True, "random_sd15.safetensors", 1.0, 0.5], batch_size=2,
                               prompt="a [red:blue:2] fox AND a snowy forest")
    assert len(images) == 2
    assert webui.calls() == [4] * STEPS  # two images of two AND-parts each, no negative rows


def test_hires_fix_and_img2img_run_with_dice(webui):
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 2,
             "denoising_strength": 0.6}
    if webui.kind == "forge":
        hires["hr_additional_modules"] = ["Use same choices"]
    images, _ = webui.generate([True, "random_sd15.safetensors", 1.0, 0.5], **hires)
    assert images[0].shape == (96, 96, 3)
    assert set(webui.calls()) == {1}
    init = io.BytesIO()
    from PIL import Image

    Image.fromarray(images[0]).save(init, format="PNG")
    images, info = webui.generate([True, "random_sd15.safetensors", 1.0, 0.5], endpoint="img2img",
                                  init_images=[base64.b64encode(init.getvalue()).decode()], denoising_strength=0.6)
    assert len(images) == 1 and "DICE sharpener" in info["infotexts"][0]
    assert set(webui.calls()) == {1}


@pytest.mark.parametrize(("name", "message"), [
    ("hostile.safetensors", "hostile.safetensors"),
    ("sdxl_width.safetensors", "768 (SD1.x (CLIP-L)) wide but this sharpener was trained for 2048"),
    ("gone.safetensors", "no sharpener 'gone.safetensors'"),
])
def test_a_bad_file_stops_the_generation_with_its_reason_and_the_host_keeps_running(webui, name, message):
    images, info = webui.generate([True, name, 1.0, 0.5])
    assert images == [] and message in info["extra_generation_params"]["DICE error"]
    assert len(webui.generate([True, "random_sd15.safetensors", 1.0, 0.5])[0]) == 1


def test_a_long_prompt_with_a_negative_makes_one_call_per_step(webui):
    long = ", ".join(["a red fox in the snow at dusk, detailed fur, golden light, pine trees"] * 6)  # > 75 tokens
    images, info = webui.generate([True, "random_sd15.safetensors", 1.0, 0.5], prompt=long, negative_prompt="blurry")
    assert len(images) == 1 and "DICE error" not in info["extra_generation_params"]
    assert webui.calls() == [1] * STEPS


def test_pasted_parameters_turn_dice_on_with_the_same_values_and_give_the_same_image(webui):
    if webui.kind == "forge":
        pytest.skip("Forge's API cannot apply any infotext (its apply_infotext calls isinstance on list[str] and "
                    "raises TypeError before reaching extensions); its UI paste is not driven by these tests")
    images, info = webui.generate([True, "random_sd15.safetensors", 0.75, 0.25], negative_prompt="blurry")
    text = info["infotexts"][0]
    assert "DICE alpha: 0.75" in text and "DICE beta: 0.25" in text
    # The webui's API reads an infotext the way its paste button does, through the scripts' infotext fields.
    webui.calls()
    pasted, pasted_info = webui.webui.generate(None, infotext=text)
    assert np.array_equal(pasted[0], images[0])
    assert "DICE sharpener: random_sd15.safetensors" in pasted_info["infotexts"][0]
    assert webui.calls() == [1] * STEPS


ADAPTER = "<lora:random_sd15_dice_adapter:1>"


def test_a_guidance_adapter_through_lora_at_cfg_one_makes_one_call_of_batch_one_per_step_and_changes_the_image(webui):
    plain = webui.generate(override_settings={"skip_early_cond": 1.0})[0][0]
    images, info = webui.generate([True, "None", 1.0, 0.5], prompt=f"{PROMPT['prompt']} {ADAPTER}")
    assert webui.calls() == [1] * STEPS
    assert changed(images[0], plain)
    text = info["infotexts"][0]
    assert "DICE adapter: random_sd15_dice_adapter" in text and "DICE error" not in text
    # The built-in Lora applied it: the same prompt at strength 0 is the plain image.
    at_zero = webui.generate([True, "None", 1.0, 0.5], prompt=f"{PROMPT['prompt']} <lora:random_sd15_dice_adapter:0>")[0][0]
    assert np.array_equal(at_zero, plain)


def test_an_adapter_on_the_res_blocks_convolutions_is_applied_by_the_builtin_lora_at_one_call_per_step(webui):
    """--adapter-layers all writes LoCon pairs on the res-blocks' convolutions; a file of those alone changes the image
    only if the webui's Lora applies them."""
    plain = webui.generate(override_settings={"skip_early_cond": 1.0})[0][0]
    prompt = f"{PROMPT['prompt']} <lora:res_blocks_sd15_dice_adapter:1>"
    images, info = webui.generate([True, "None", 1.0, 0.5], prompt=prompt)
    assert webui.calls() == [1] * STEPS and changed(images[0], plain)
    assert "DICE adapter: res_blocks_sd15_dice_adapter" in info["infotexts"][0]
    assert "DICE error" not in info["infotexts"][0]


def test_an_adapter_trained_for_another_checkpoint_is_used_and_the_infotext_names_that_checkpoint(webui):
    own = webui.generate([True, "None", 1.0, 0.5], prompt=f"{PROMPT['prompt']} {ADAPTER}")[1]["infotexts"][0]
    assert "DICE adapter trained for" not in own  # made for the loaded checkpoint: nothing to say
    images, info = webui.generate([True, "None", 1.0, 0.5], prompt=f"{PROMPT['prompt']} <lora:other_sd15_dice_adapter:1>")
    assert len(images) == 1 and webui.calls() == [1] * STEPS
    text = info["infotexts"][0]
    assert "DICE adapter trained for: dreamshaper_8.safetensors (sha256 abababababab)" in text
    assert "DICE error" not in text


@pytest.mark.parametrize(("adapter", "message"), [
    ("sdxl_dice_adapter", "sdxl_dice_adapter.safetensors: 1 of its 1 layers are not in this checkpoint's UNet"),
    ("truncated_dice_adapter", "truncated_dice_adapter.safetensors: is truncated"),
    ("pickled_dice_adapter", "pickled_dice_adapter.safetensors: is a Python pickle"),
])
def test_a_bad_adapter_stops_the_generation_naming_the_file_and_the_host_keeps_running(webui, adapter, message):
    images, info = webui.generate([True, "None", 1.0, 0.5], prompt=f"a red fox <lora:{adapter}:1>")
    assert images == [] and message in info["extra_generation_params"]["DICE error"]
    assert len(webui.generate([True, "None", 1.0, 0.5], prompt=f"a red fox {ADAPTER}")[0]) == 1


def test_the_adapter_guidance_slider_is_the_knob_in_cfg_units_at_one_call_per_step(webui):
    """The fixture adapter was trained at one scale (5): guidance 3 is its strength 0.5, the default 5 its strength 1."""
    prompt = f"{PROMPT['prompt']} {ADAPTER}"
    at_five = webui.generate([True, "None", 1.0, 0.5], prompt=prompt)[0][0]
    images, info = webui.generate([True, "None", 1.0, 0.5, 3.0], prompt=prompt)
    assert webui.calls() == [1] * STEPS
    half = webui.generate([True, "None", 1.0, 0.5], prompt=f"{PROMPT['prompt']} <lora:random_sd15_dice_adapter:0.5>")[0][0]
    assert np.array_equal(images[0], half) and changed(images[0], at_five)
    assert "DICE guidance: 3" in info["infotexts"][0]
    assert "outside the scales it was trained for (5)" in info["infotexts"][0] + info.get("comments", "")
    assert np.array_equal(webui.generate([True, "None", 1.0, 0.5, 5.0], prompt=prompt)[0][0], at_five)


def test_a_negative_prompt_with_an_adapter_acts_in_the_one_call_and_strength_one_turns_it_off(webui):
    prompt = f"{PROMPT['prompt']} {ADAPTER}"
    without = webui.generate([True, "None", 1.0, 0.5], prompt=prompt)[0][0]
    images, info = webui.generate([True, "None", 1.0, 0.5, 5.0, 3.0], prompt=prompt, negative_prompt="blurry, watermark")
    assert webui.calls() == [1] * STEPS
    assert changed(images[0], without) and "DICE negative strength: 3" in info["infotexts"][0]
    off = webui.generate([True, "None", 1.0, 0.5, 5.0, 1.0], prompt=prompt, negative_prompt="blurry, watermark")[0][0]
    assert np.array_equal(off, without)
    # The hooks are gone once the generation ends: the same request without a negative is the image without one.
    assert np.array_equal(webui.generate([True, "None", 1.0, 0.5, 5.0, 3.0], prompt=prompt)[0][0], without)
