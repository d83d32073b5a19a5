"""Load the pack the way ComfyUI does: as a package from its folder's __init__.py, under a fixed name."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pickle

import pytest
import torch
from safetensors import safe_open

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "dice_pack"


def _load_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


_load_pack()


@pytest.fixture
def sharpener():
    """A randomly initialised SD1.5-width sharpener with a visibly non-zero residual."""
    from dice_pack.sharpeners import Sharpener

    torch.manual_seed(0)
    return Sharpener().eval()


@pytest.fixture
def sharpener_file(sharpener, tmp_path):
    """The same sharpener saved and loaded back as a file."""
    from dice_pack.sharpeners import TrainingInfo, load_sharpener, save_sharpener

    path = tmp_path / "test.safetensors"
    save_sharpener(path, sharpener, TrainingInfo(base_checkpoint="tiny.safetensors", default_alpha=1.0))
    return load_sharpener(path)


def save_random_adapter(checkpoint: Path, path: Path, family: str = "sd15", seed: int = 0,
                        trained_for: tuple[str, str] | None = None, convolutions: bool = False) -> None:
    """A guidance adapter on every attention projection of checkpoint's UNet (with convolutions, on its res-blocks'
    two convolutions instead: LoCon pairs), with non-zero weights, as training leaves it (the layer names and shapes
    are read from the checkpoint's own keys). It names checkpoint as its base, by sha256 and weights as the trainer
    does, or trained_for's (name, sha256) and no weights: another checkpoint."""
    from dice_pack.sharpeners.adapter import GuidanceAdapter
    from dice_pack.sharpeners.adapter_file import AdapterInfo, save_adapter
    from dice_pack.sharpeners.fingerprint import weight_fingerprint
    from dice_pack.training.hashing import file_sha256

    prefix, shapes = "model.diffusion_model.", {}
    with safe_open(checkpoint, framework="pt") as f:
        for key in f.keys():
            if not key.startswith(prefix):
                continue
            if convolutions and key.endswith((".in_layers.2.weight", ".out_layers.3.weight")):
                out_channels, in_channels, *kernel = f.get_slice(key).get_shape()
                shapes[key[len(prefix):-len(".weight")]] = (in_channels, out_channels, *kernel)
            elif not convolutions and ".attn" in key and key.endswith((".to_q.weight", ".to_k.weight", ".to_v.weight",
                                                                         ".to_out.0.weight")):
                out_features, in_features = f.get_slice(key).get_shape()
                shapes[key[len(prefix):-len(".weight")]] = (in_features, out_features)
        fingerprint = weight_fingerprint(lambda p: f.get_tensor(f"{prefix}{p}.weight"), sorted(shapes))
    torch.manual_seed(seed)
    adapter = GuidanceAdapter(shapes)
    for lora in adapter.layers.values():
        lora.up.data.normal_(0, 0.02)
    name, sha256 = trained_for or (checkpoint.name, file_sha256(checkpoint))
    save_adapter(path, adapter, AdapterInfo(model_family=family, base_checkpoint=name, base_checkpoint_sha256=sha256,
                                            base_fingerprint="" if trained_for else fingerprint))


def make_bad_adapters(loras: Path) -> None:
    """Beside loras/random_sd15_dice_adapter.safetensors: an adapter for another model (layers SD1.5's UNet lacks), a
    truncated one and a pickle renamed .safetensors."""
    from dice_pack.sharpeners.adapter import GuidanceAdapter
    from dice_pack.sharpeners.adapter_file import AdapterInfo, save_adapter

    save_adapter(loras / "sdxl_dice_adapter.safetensors",
                 GuidanceAdapter({"input_blocks.4.1.transformer_blocks.9.attn2.to_k": (2048, 640)}),
                 AdapterInfo(model_family="sdxl", base_checkpoint="sd_xl_base_1.0.safetensors"))
    good = (loras / "random_sd15_dice_adapter.safetensors").read_bytes()
    (loras / "truncated_dice_adapter.safetensors").write_bytes(good[:len(good) // 2])
    (loras / "pickled_dice_adapter.safetensors").write_bytes(pickle.dumps({"lora": [0.0] * 8}, protocol=4))
