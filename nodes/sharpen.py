"""Sharpen Conditioning: c → c + α·r(c, c_ref), so a KSampler at CFG 1 does what CFG did with two calls."""
from __future__ import annotations

import comfy.model_management

from .conditioning import sharpen_conditioning
from .loader import SHARPENER_TYPE


class SharpenConditioning:
    """Node: positive + reference + sharpener + α → sharpened positive."""

    DESCRIPTION = (
        "DICE: rewrites the prompt's conditioning so that one UNet call per step gives CFG-like images. "
        "Set the KSampler's cfg to 1.0: it then skips the negative pass and runs twice as fast."
    )
    CATEGORY = "conditioning/DICE"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The sharpened conditioning: connect it to the KSampler's positive input, with cfg 1.0.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "Your prompt, from CLIP Text Encode."}),
                "reference": (
                    "CONDITIONING",
                    {"tooltip": "The empty prompt \"\" encoded with the same CLIP, or a negative prompt's encoding."},
                ),
                "sharpener": (SHARPENER_TYPE, {"tooltip": "From Load DICE Sharpener."}),
                "alpha": (
                    "FLOAT",
                    {
                        "default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05, "display": "slider",
                        "tooltip": "Sharpening strength α; it acts like the guidance scale. 0 = plain unguided "
                                   "sampling, 1 = the CFG scale the sharpener was trained for (the file's default), "
                                   "above 1 = stronger.",
                    },
                ),
            }
        }

    def apply(self, positive, reference, sharpener, alpha):
        device = comfy.model_management.get_torch_device()
        return (sharpen_conditioning(positive, reference, sharpener, alpha, device),)
