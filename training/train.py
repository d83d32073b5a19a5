"""Distil a DICE sharpener for a checkpoint:  python training/train.py --ckpt dreamshaper.safetensors

On the offline testbed:  python training/train.py --testbed        (see --help)
"""
import importlib.util
import sys
from pathlib import Path


def load_pack():
    """Import the pack as a package, the way ComfyUI does, so training/ and sharpeners/ import each other."""
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("dice_pack", root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["dice_pack"] = module
    spec.loader.exec_module(module)


if __name__ == "__main__":
    load_pack()
    from dice_pack.training.cli import main

    main()
