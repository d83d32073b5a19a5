"""What ComfyUI-Manager and the Comfy Registry read: requirements, install.py, pyproject, __init__, workflows."""
import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib

import pytest

import dice_pack
from conftest import PACK_ROOT


def load_install_module():
    spec = importlib.util.spec_from_file_location("dice_install", PACK_ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pack_imports_without_comfyui_and_exposes_no_nodes_there():
    assert dice_pack.NODE_CLASS_MAPPINGS == {} and dice_pack.NODE_DISPLAY_NAME_MAPPINGS == {}


def test_requirements_never_name_torch():
    install = load_install_module()
    names = {install.requirement_name(line) for line in (PACK_ROOT / "requirements.txt").read_text().splitlines()}
    assert names - {""} and not names & {"torch", "torchvision", "torchaudio"}


def test_install_skips_torch_and_installed_packages_and_lists_only_what_is_missing(tmp_path):
    install = load_install_module()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch>=99\ntorchvision\n# a comment\nnumpy  # installed\nno-such-package-dice==1.0\n")
    assert install.missing_requirements(requirements) == ["no-such-package-dice==1.0"]


def fake_comfyui(tmp_path, pack_folder_name):
    root = tmp_path / "ComfyUI"
    (root / "custom_nodes").mkdir(parents=True)
    (root / "folder_paths.py").write_text("")
    pack = root / "custom_nodes" / pack_folder_name
    pack.mkdir()
    for name in ("install.py", "requirements.txt"):
        shutil.copy(PACK_ROOT / name, pack / name)
    return root, pack


def test_install_creates_the_sharpener_folder_even_when_the_pack_is_renamed_and_is_idempotent(tmp_path):
    root, pack = fake_comfyui(tmp_path, "comfyui-dice-sharpeners")
    for _ in range(2):
        done = subprocess.run([sys.executable, str(pack / "install.py")], capture_output=True, text=True, cwd=pack)
        assert done.returncode == 0, done.stderr
        assert "all requirements are present" in done.stdout
    assert (root / "models" / "sharpeners").is_dir()


def test_pyproject_has_what_the_comfy_registry_reads():
    project = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())
    name = project["project"]["name"]
    assert name == name.lower() and "comfyui" not in name
    comfy = project["tool"]["comfy"]
    assert {"PublisherId", "DisplayName", "Icon", "requires-comfyui"} <= set(comfy)
    assert not any(d.startswith("torch") for d in project["project"]["dependencies"])


@pytest.mark.parametrize("workflow", sorted((PACK_ROOT / "example_workflows").glob("*.json")), ids=lambda p: p.stem)
def test_example_workflows_are_consistent_ui_graphs_with_dice_at_cfg_one(workflow):
    graph = json.loads(workflow.read_text())
    nodes = {node["id"]: node for node in graph["nodes"]}
    for link_id, source, slot, target, target_slot, kind in graph["links"]:
        assert link_id in nodes[source]["outputs"][slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert nodes[target]["inputs"][target_slot]["type"] == kind == nodes[source]["outputs"][slot]["type"]
    kinds = [node["type"] for node in nodes.values()]
    assert ("DICESharpenerLoader" in kinds and "DICESharpenConditioning" in kinds) or "DICEAdapterLoader" in kinds
    cfg_widget = {"KSampler": 3, "KSamplerAdvanced": 4}
    samplers = [node for node in nodes.values() if node["type"] in cfg_widget]

    def feeding(sampler: dict, name: str = "positive") -> str:
        link_id = next(i["link"] for i in sampler["inputs"] if i["name"] == name)
        return nodes[next(link[1] for link in graph["links"] if link[0] == link_id)]["type"]

    # Every sampler on DICE's conditioning or the adapted model runs at cfg 1; the last sampler is one of them.
    on_dice = [s for s in samplers if feeding(s) in ("DICESharpenConditioning", "DICENegativeShift")
               or feeding(s, "model") in ("DICEAdapterLoader", "DICENegativePrompt")]
    assert on_dice and on_dice[-1] is samplers[-1]
    assert all(s["widgets_values"][cfg_widget[s["type"]]] == 1.0 for s in on_dice)
    advanced = [s["widgets_values"] for s in samplers if s["type"] == "KSamplerAdvanced"]
    if advanced:  # a hand-over: one schedule; the second starts where the first stops, on its leftover noise
        first, second = advanced
        assert first[3] == second[3] and first[5:7] == second[5:7] and first[8] == second[7]
        assert first[9] == "enable" and second[0] == "disable"
