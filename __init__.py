"""DICE for ComfyUI: CFG-quality images at CFG 1 with a ~2 M-parameter sharpener.

Inside ComfyUI this exposes the nodes; elsewhere (the trainer, the tests) it imports without them.
"""
import importlib.util

if importlib.util.find_spec("comfy") is not None and importlib.util.find_spec("folder_paths") is not None:
    from .nodes.mappings import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
