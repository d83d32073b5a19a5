"""DICE sharpeners: the network, its file format and the formulas. Plain torch; no ComfyUI import."""
from .errors import ConditioningError, DiceError, SharpenerFileError
from .fileformat import FORMAT_VERSION, SharpenerFile, TrainingInfo, load_sharpener, read_metadata, save_sharpener
from .formulas import negative_shift, repeat_to_common_length, sharpen, sharpening_residual
from .network import Sharpener, SharpenerConfig

__all__ = [
    "ConditioningError",
    "DiceError",
    "FORMAT_VERSION",
    "Sharpener",
    "SharpenerConfig",
    "SharpenerFile",
    "SharpenerFileError",
    "TrainingInfo",
    "load_sharpener",
    "negative_shift",
    "read_metadata",
    "repeat_to_common_length",
    "save_sharpener",
    "sharpen",
    "sharpening_residual",
]
