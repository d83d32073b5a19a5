"""Negative Shift: c → c − β·(c_neg − c_null), the way a negative prompt acts at CFG 1."""
from __future__ import annotations

from .conditioning import negative_shift_conditioning


class NegativeShift:
    """Node: conditioning + negative + null + β → shifted conditioning."""

    DESCRIPTION = (
        "Folds a negative prompt into the positive conditioning. At cfg 1.0 ComfyUI never runs the KSampler's "
        "negative input, so with DICE this node is how a negative prompt takes effect."
    )
    CATEGORY = "conditioning/DICE"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The shifted conditioning: connect it to the KSampler's positive input.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "conditioning": ("CONDITIONING", {"tooltip": "Usually the output of Sharpen Conditioning."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative prompt, encoded with the same CLIP."}),
                "null": ("CONDITIONING", {"tooltip": "The empty prompt \"\", encoded with the same CLIP."}),
                "beta": (
                    "FLOAT",
                    {
                        "default": 0.5, "min": 0.0, "max": 2.0, "step": 0.05, "display": "slider",
                        "tooltip": "Strength β of the shift away from the negative prompt; 0 = no effect.",
                    },
                ),
            }
        }

    def apply(self, conditioning, negative, null, beta):
        return (negative_shift_conditioning(conditioning, negative, null, beta),)
