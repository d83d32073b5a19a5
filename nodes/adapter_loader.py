"""Load DICE Guidance Adapter: a DICE adapter (a LoRA) checked against the model, then applied by ComfyUI's own LoRA
loading, so the KSampler at cfg 1.0 gives CFG-like images in one UNet call per step."""
from __future__ import annotations

import logging

import comfy.lora
import comfy.sd
import comfy.utils
import folder_paths

from ..sharpeners.adapter_file import load_adapter
from ..sharpeners.fingerprint import same_weights

FOLDER_NAME = "loras"  # adapters are LoRAs: ComfyUI's LoraLoader finds them in the same folder
DEFAULT_CFG = 5.0  # the trainer's default scale: an adapter trained at it gives at 5 exactly what it gave before the knob


class LoadDICEAdapter:
    """Node: model + adapter file + strength → the model with the adapter's weight deltas."""

    DESCRIPTION = (
        "Loads a DICE guidance adapter (a LoRA from models/loras made by training/train.py --train adapter) onto the "
        "model. Set the KSampler's cfg to 1.0: the adapted model gives CFG-like images in one UNet call per step. "
        "Unlike the plain Load LoRA node, it refuses files that are not DICE adapters or were made for another model "
        "family, naming the file."
    )
    CATEGORY = "conditioning/DICE"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the adapter: connect it to a KSampler with cfg 1.0.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The checkpoint's model the adapter was trained for."}),
                "adapter_name": (folder_paths.get_filename_list(FOLDER_NAME),
                                 {"tooltip": "A DICE adapter in models/loras (<checkpoint>_dice_adapter.safetensors)."}),
                "strength": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05, "display": "slider",
                    "tooltip": "A multiplier on top of cfg, as any LoRA's strength: 0 = the plain model (unguided at "
                               "the KSampler's cfg 1.0), 1 = the guidance cfg asks for."}),
                "cfg": ("FLOAT", {
                    "default": DEFAULT_CFG, "min": 1.0, "max": 30.0, "step": 0.1, "round": 0.01,
                    "tooltip": "The guidance scale, in CFG's own units: the image CFG would give at this scale, for one "
                               "UNet call per step (keep the KSampler's own cfg at 1.0). 1 = the plain model. An adapter "
                               "trained with --guidance-range follows it over that range (e.g. 1-10); an older one was "
                               "trained at one scale (5) and only scales its strength."}),
            }
        }

    def load(self, model, adapter_name, strength, cfg=DEFAULT_CFG):
        path = folder_paths.get_full_path_or_raise(FOLDER_NAME, adapter_name)
        adapter = load_adapter(path)
        keys = comfy.lora.model_lora_keys_unet(model.model, {})
        kind = f"this {type(model.model.model_config).__name__} model"
        adapter.check_names(set(keys), kind)
        adapter.check_shapes(lambda name: layer_features(model, keys[name]), kind)
        lora_strength, warning = adapter.strength_at(cfg, strength)
        logging.info("DICE: loaded %s; cfg %g → strength %.3f", adapter.summary(), cfg, lora_strength)
        if warning:
            logging.warning("DICE: %s", warning)
        # ComfyUI's MODEL does not know its checkpoint's file: the weights the adapter recorded tell it instead.
        note = adapter.other_checkpoint_note(same_weights(adapter.info.base_fingerprint,
                                                          lambda path: checkpoint_weight(model, path)))
        if note:
            logging.info("DICE: %s", note)
        if lora_strength == 0:
            return (model,)
        adapted, _ = comfy.sd.load_lora_for_models(model, None, adapter.tensors, lora_strength, 0)
        return (adapted,)


def layer_features(model, key) -> tuple[int, ...] | None:
    """A layer's (in, out) features (a convolution's kernel after them) from its weight under the key ComfyUI's LoRA
    loader maps the adapter's name to; None where the weight does not say (a packed quantized tensor), so the check
    leaves that layer to the loader."""
    shape = getattr(comfy.utils.get_attr(model.model, key), "shape", ()) if isinstance(key, str) else ()
    return (int(shape[1]), int(shape[0]), *map(int, shape[2:])) if len(shape) >= 2 else None


def checkpoint_weight(model, path: str):
    """A layer's weight as the checkpoint has it: while LoRAs are applied, ComfyUI keeps that one in the patcher's backup."""
    key = f"diffusion_model.{path}.weight"
    saved = getattr(model, "backup", {}).get(key)
    if saved is not None:
        return saved.weight
    try:
        return comfy.utils.get_attr(model.model, key)
    except AttributeError:
        return None
