"""The pack inside the real ComfyUI: /object_info, the example workflows through /prompt, errors.

Needs COMFYUI_PATH (a ComfyUI checkout); ComfyUI runs with COMFYUI_PYTHON (default: this Python).
Everything happens in a temporary base directory, so the ComfyUI folder itself is never changed.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import PACK_ROOT, make_bad_adapters, save_random_adapter
from dice_pack.sharpeners import Sharpener, SharpenerConfig, TrainingInfo, save_sharpener
from dice_pack.tools.workflow_api import ui_to_api

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(not COMFYUI_PATH, reason="COMFYUI_PATH is not set: no real ComfyUI host to test the nodes in"),
]
NODE_IDS = {"DICESharpenerLoader": "Load DICE Sharpener", "DICESharpenConditioning": "Sharpen Conditioning",
            "DICENegativeShift": "Negative Shift", "DICEAdapterLoader": "Load DICE Guidance Adapter",
            "DICENegativePrompt": "DICE Negative Prompt"}
WORKFLOWS = sorted((PACK_ROOT / "example_workflows").glob("*.json"))


class Host:
    """A running ComfyUI server and the folders it was given."""

    def __init__(self, url: str, base: Path, process: subprocess.Popen, log: Path) -> None:
        self.url, self.base, self.process, self.log = url, base, process, log

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue prompt and wait for its history entry."""
        body = json.dumps({"prompt": prompt, "client_id": "dice-tests"}).encode()
        request = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                prompt_id = json.loads(response.read())["prompt_id"]
        except urllib.error.HTTPError as error:
            raise AssertionError(f"/prompt refused the workflow: {error.read().decode()}") from None
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            time.sleep(0.3)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s; log: {self.log}")

    def image_bytes(self, entry: dict) -> bytes:
        """The first saved image of a finished prompt."""
        image = next(i for out in entry["outputs"].values() for i in out.get("images", []))
        return (self.base / "output" / image["subfolder"] / image["filename"]).read_bytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_random_sharpener(path: Path, width: int = 768, seed: int = 0) -> None:
    torch.manual_seed(seed)
    save_sharpener(path, Sharpener(SharpenerConfig(embed_dim=width)), TrainingInfo(base_checkpoint="tiny_sd15"))


def comfyui_python(comfy_root: Path) -> str:
    """COMFYUI_PYTHON, else a virtual environment inside the ComfyUI folder, else this Python."""
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for candidate in (comfy_root / ".venv" / "bin" / "python", comfy_root / "venv" / "bin" / "python"):
        if candidate.is_file():
            return str(candidate)
    return sys.executable


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    comfy_root = Path(COMFYUI_PATH).resolve()
    if not (comfy_root / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={comfy_root} holds no ComfyUI (main.py is missing)")
    python = comfyui_python(comfy_root)
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-DICE").symlink_to(PACK_ROOT, target_is_directory=True)
    checkpoint = base / "models" / "checkpoints" / "tiny_sd15.safetensors"
    subprocess.run([python, str(PACK_ROOT / "tools" / "make_random_checkpoint.py"), "--comfy-root", str(comfy_root),
                    "--out", str(checkpoint)], check=True, capture_output=True)
    save_random_sharpener(base / "models" / "sharpeners" / "random_sd15.safetensors")
    loras = base / "models" / "loras"
    save_random_adapter(checkpoint, loras / "random_sd15_dice_adapter.safetensors")
    make_bad_adapters(loras)
    save_random_sharpener(base / "models" / "sharpeners" / "wrong_width_sd2.safetensors", width=1024)
    extra = base / "elsewhere" / "my_sharpeners"
    save_random_sharpener(extra / "from_extra_paths.safetensors", seed=1)
    (extra / "not_a_sharpener.ckpt").write_bytes(b"pickles are never listed")
    config = base / "extra_model_paths.yaml"
    config.write_text(f"mine:\n  base_path: {base / 'elsewhere'}\n  sharpeners: my_sharpeners\n")
    port, log = free_port(), base / "comfyui.log"
    process = subprocess.Popen(
        [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
         "--extra-model-paths-config", str(config), "--disable-auto-launch", "--disable-metadata",
         "--database-url", "sqlite:///:memory:"],
        cwd=comfy_root, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    server = Host(f"http://127.0.0.1:{port}", base, process, log)
    deadline = time.time() + 180
    while True:
        try:
            server.get("/object_info/DICESharpenerLoader")
            break
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"ComfyUI did not start; its log:\n{log.read_text()[-4000:]}")
            time.sleep(1)
    yield server
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def api_prompt(host: Host, workflow: Path, **changes) -> dict:
    """An example workflow in API form, on the fixture checkpoint at 64×64 and 2 steps to keep CPU runs short."""
    prompt = ui_to_api(json.loads(workflow.read_text()), host.get("/object_info"))
    for node in prompt.values():
        inputs = node["inputs"]
        kind = node["class_type"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = "tiny_sd15.safetensors"
        elif kind == "DICESharpenerLoader":
            inputs["sharpener_name"] = changes.get("sharpener", "random_sd15.safetensors")
        elif kind == "DICEAdapterLoader":
            inputs["adapter_name"] = changes.get("adapter", "random_sd15_dice_adapter.safetensors")
            inputs["strength"] = changes.get("strength", inputs["strength"])
            inputs["cfg"] = changes.get("adapter_cfg", inputs["cfg"])
        elif kind == "DICENegativePrompt":
            inputs["scale"] = changes.get("negative_scale", inputs["scale"])
        elif kind == "EmptyLatentImage":
            inputs.update(width=64, height=64)
        elif kind == "KSampler":
            inputs.update(steps=2)
        elif kind == "KSamplerAdvanced":  # CFG then DICE: the hand-over moves to the last two of 3 steps
            inputs.update(steps=3, **{key: 1 for key in ("start_at_step", "end_at_step") if 0 < inputs[key] < 10000})
        elif kind == "DICESharpenConditioning" and "alpha" in changes:
            inputs["alpha"] = changes["alpha"]
        elif kind == "DICENegativeShift" and "beta" in changes:
            inputs["beta"] = changes["beta"]
        elif kind == "CLIPTextEncode" and "negative_text" in changes and node_title(workflow, node) == "Negative prompt":
            inputs["text"] = changes["negative_text"]
    return prompt


def node_title(workflow: Path, api_node: dict) -> str:
    nodes = json.loads(workflow.read_text())["nodes"]
    return next((n.get("title", "") for n in nodes if n["type"] == api_node["class_type"]
                 and n["widgets_values"][:1] == [api_node["inputs"].get("text")]), "")


def find(prompt: dict, kind: str) -> str:
    return next(key for key, node in prompt.items() if node["class_type"] == kind)


def samplers_on_dice(prompt: dict) -> list[dict]:
    """The inputs of every sampler whose positive conditioning or model comes from one of the pack's nodes."""
    dice = {key for key, node in prompt.items() if node["class_type"] in NODE_IDS}
    return [node["inputs"] for node in prompt.values() if node["class_type"] in ("KSampler", "KSamplerAdvanced")
            and (node["inputs"]["positive"][0] in dice or node["inputs"]["model"][0] in dice)]


def test_the_nodes_load_with_their_fixed_ids_names_and_tooltips(host):
    info = host.get("/object_info")
    for node_id, display_name in NODE_IDS.items():
        assert info[node_id]["display_name"] == display_name
        assert info[node_id]["category"] == "conditioning/DICE"
        assert info[node_id]["description"]
        for name, spec in info[node_id]["input"]["required"].items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    alpha = info["DICESharpenConditioning"]["input"]["required"]["alpha"]
    assert alpha[0] == "FLOAT" and alpha[1]["default"] == 1.0 and "guidance scale" in alpha[1]["tooltip"]
    assert "cfg 1.0" in info["DICENegativeShift"]["description"]


def test_the_loader_lists_models_sharpeners_and_extra_model_paths_but_no_pickles(host):
    names = host.get("/object_info/DICESharpenerLoader")["DICESharpenerLoader"]["input"]["required"]["sharpener_name"][0]
    assert {"random_sd15.safetensors", "from_extra_paths.safetensors", "wrong_width_sd2.safetensors"} <= set(names)
    assert "not_a_sharpener.ckpt" not in names


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_example_workflow_runs_through_the_prompt_api(host, workflow):
    prompt = api_prompt(host, workflow)
    samplers = samplers_on_dice(prompt)
    assert samplers and all(sampler["cfg"] == 1.0 for sampler in samplers)
    entry = host.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert host.image_bytes(entry)[:8] == b"\x89PNG\r\n\x1a\n"


def test_alpha_zero_is_plain_sampling_and_alpha_one_changes_the_image(host):
    workflow = PACK_ROOT / "example_workflows" / "dice_sd15_text_to_image.json"
    sharpened = api_prompt(host, workflow, alpha=1.0)
    plain = api_prompt(host, workflow)
    # The plain graph feeds the prompt's encoding straight to the KSampler.
    plain[find(plain, "KSampler")]["inputs"]["positive"] = plain[find(plain, "DICESharpenConditioning")]["inputs"]["positive"]
    image_plain = host.image_bytes(host.run(plain))
    image_zero = host.image_bytes(host.run(api_prompt(host, workflow, alpha=0.0)))
    image_one = host.image_bytes(host.run(sharpened))
    assert image_zero == image_plain
    assert image_one != image_plain


def test_the_negative_prompt_takes_effect_at_cfg_one_through_negative_shift(host):
    workflow = PACK_ROOT / "example_workflows" / "dice_sd15_negative_prompt.json"
    first = host.image_bytes(host.run(api_prompt(host, workflow, negative_text="blurry")))
    second = host.image_bytes(host.run(api_prompt(host, workflow, negative_text="a field of sunflowers")))
    assert first != second


def test_a_wrong_width_sharpener_gives_a_clear_error_and_the_host_keeps_working(host):
    workflow = PACK_ROOT / "example_workflows" / "dice_sd15_text_to_image.json"
    entry = host.run(api_prompt(host, workflow, sharpener="wrong_width_sd2.safetensors"))
    assert entry["status"]["status_str"] == "error"
    error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert error["node_type"] == "DICESharpenConditioning"
    assert "768 (SD1.x" in error["exception_message"] and "1024 (SD2.x" in error["exception_message"]
    assert host.process.poll() is None
    assert host.run(api_prompt(host, workflow))["status"]["status_str"] == "success"


ADAPTER_WORKFLOW = PACK_ROOT / "example_workflows" / "dice_sd15_guidance_adapter.json"


def test_the_adapter_at_strength_zero_is_the_plain_model_byte_for_byte_and_at_one_changes_the_image(host):
    plain = api_prompt(host, ADAPTER_WORKFLOW)
    sampler = plain[find(plain, "KSampler")]["inputs"]
    sampler["model"] = plain[find(plain, "DICEAdapterLoader")]["inputs"]["model"]  # the checkpoint's own model
    image_plain = host.image_bytes(host.run(plain))
    image_zero = host.image_bytes(host.run(api_prompt(host, ADAPTER_WORKFLOW, strength=0.0)))
    image_one = host.image_bytes(host.run(api_prompt(host, ADAPTER_WORKFLOW, strength=1.0)))
    assert image_zero == image_plain
    assert image_one != image_plain


def test_comfyuis_own_lora_loader_loads_the_adapter_as_it_is_and_gives_the_packs_image(host):
    ours = host.image_bytes(host.run(api_prompt(host, ADAPTER_WORKFLOW)))
    prompt = api_prompt(host, ADAPTER_WORKFLOW)
    loader = find(prompt, "DICEAdapterLoader")
    prompt[loader] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": prompt[loader]["inputs"]["model"], "lora_name": "random_sd15_dice_adapter.safetensors",
        "strength_model": 1.0}}
    before = host.log.read_text()
    entry = host.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert host.image_bytes(entry) == ours
    assert "lora key not loaded" not in host.log.read_text()[len(before):]


@pytest.mark.parametrize("adapter, message", [
    ("sdxl_dice_adapter.safetensors", "sdxl_dice_adapter.safetensors: 1 of its 1 layers are not in this SD15 model"),
    ("truncated_dice_adapter.safetensors", "truncated_dice_adapter.safetensors: is truncated"),
    ("pickled_dice_adapter.safetensors", "pickled_dice_adapter.safetensors: is a Python pickle"),
])
def test_a_bad_adapter_gives_a_clear_error_naming_the_file_and_the_host_keeps_working(host, adapter, message):
    entry = host.run(api_prompt(host, ADAPTER_WORKFLOW, adapter=adapter))
    assert entry["status"]["status_str"] == "error"
    error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert error["node_type"] == "DICEAdapterLoader" and message in error["exception_message"], error
    assert host.process.poll() is None
    assert host.run(api_prompt(host, ADAPTER_WORKFLOW))["status"]["status_str"] == "success"


def with_lora_loader(host: Host, strength: float) -> dict:
    """The adapter workflow with ComfyUI's own LoraLoaderModelOnly in place of the pack's loader, at strength."""
    prompt = api_prompt(host, ADAPTER_WORKFLOW)
    loader = find(prompt, "DICEAdapterLoader")
    prompt[loader] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": prompt[loader]["inputs"]["model"], "lora_name": "random_sd15_dice_adapter.safetensors",
        "strength_model": strength}}
    return prompt


def test_the_cfg_knob_at_the_files_scale_gives_todays_image_and_maps_other_scales_to_strengths(host):
    """The fixture adapter was trained at one scale (5), as every file before the knob: cfg 5 is its strength 1, cfg 3
    strength 0.5 ((3 − 1)/(5 − 1)), cfg 1 the plain model."""
    today = host.image_bytes(host.run(with_lora_loader(host, 1.0)))
    assert host.image_bytes(host.run(api_prompt(host, ADAPTER_WORKFLOW, adapter_cfg=5.0))) == today
    half = host.image_bytes(host.run(with_lora_loader(host, 0.5)))
    assert host.image_bytes(host.run(api_prompt(host, ADAPTER_WORKFLOW, adapter_cfg=3.0))) == half != today
    plain = api_prompt(host, ADAPTER_WORKFLOW)
    plain[find(plain, "KSampler")]["inputs"]["model"] = plain[find(plain, "DICEAdapterLoader")]["inputs"]["model"]
    assert host.image_bytes(host.run(api_prompt(host, ADAPTER_WORKFLOW, adapter_cfg=1.0))) == \
        host.image_bytes(host.run(plain))
    before = host.log.read_text()
    entry = host.run(api_prompt(host, ADAPTER_WORKFLOW, adapter_cfg=12.0))
    assert entry["status"]["status_str"] == "success"
    assert "cfg 12 is outside the scales it was trained for (5)" in host.log.read_text()[len(before):]


NEGATIVE_WORKFLOW = PACK_ROOT / "example_workflows" / "dice_sd15_adapter_negative_prompt.json"


def test_a_negative_prompt_with_the_adapter_changes_the_image_and_scale_one_turns_it_off(host):
    adapter_alone = host.image_bytes(host.run(api_prompt(host, ADAPTER_WORKFLOW)))
    with_negative = host.image_bytes(host.run(api_prompt(host, NEGATIVE_WORKFLOW)))
    assert with_negative != adapter_alone
    assert host.image_bytes(host.run(api_prompt(host, NEGATIVE_WORKFLOW, negative_scale=1.0))) == adapter_alone
    empty = host.run(api_prompt(host, NEGATIVE_WORKFLOW, negative_text=""))  # defined: away from the empty prompt
    assert empty["status"]["status_str"] == "success" and host.image_bytes(empty) != adapter_alone
