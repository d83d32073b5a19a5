"""Load the pack the way ComfyUI does: as a package from its folder's __init__.py, under a fixed name."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

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
