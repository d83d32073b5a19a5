"""Load DICE Sharpener: pick a file from models/sharpeners, load it once, pass it on."""
from __future__ import annotations

import os

import folder_paths

from ..sharpeners.cache import SharpenerCache

FOLDER_NAME = "sharpeners"
SHARPENER_TYPE = "DICE_SHARPENER"
_cache = SharpenerCache()


def register_sharpener_folder() -> None:
    """Add models/sharpeners, keeping any path the user configured (extra_model_paths.yaml)."""
    folder_paths.add_model_folder_path(FOLDER_NAME, os.path.join(folder_paths.models_dir, FOLDER_NAME))
    paths, _extensions = folder_paths.folder_names_and_paths[FOLDER_NAME]
    # Sharpeners are safetensors only: never offer a pickle.
    folder_paths.folder_names_and_paths[FOLDER_NAME] = (paths, {".safetensors"})


class LoadDICESharpener:
    """Node: sharpener file name → DICE_SHARPENER."""

    DESCRIPTION = (
        "Loads a DICE sharpener (.safetensors from models/sharpeners). A sharpener is a ~2 M-parameter network "
        "distilled from one checkpoint's CFG: use one made for your checkpoint or its family."
    )
    CATEGORY = "conditioning/DICE"
    RETURN_TYPES = (SHARPENER_TYPE,)
    RETURN_NAMES = ("sharpener",)
    OUTPUT_TOOLTIPS = ("The sharpener, for Sharpen Conditioning.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sharpener_name": (
                    folder_paths.get_filename_list(FOLDER_NAME),
                    {"tooltip": "A .safetensors file in models/sharpeners, made by training/train.py for a checkpoint."},
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, sharpener_name):
        path = folder_paths.get_full_path(FOLDER_NAME, sharpener_name)
        return SharpenerCache.stamp(path) if path and os.path.isfile(path) else sharpener_name

    def load(self, sharpener_name):
        path = folder_paths.get_full_path_or_raise(FOLDER_NAME, sharpener_name)
        return (_cache.get(path),)
