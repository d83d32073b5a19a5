"""The pack's ComfyUI nodes. The ids in NODE_CLASS_MAPPINGS are saved in workflows: never change them."""
from .adapter_loader import LoadDICEAdapter
from .loader import LoadDICESharpener, register_sharpener_folder
from .negative_prompt import DICENegativePrompt
from .negative_shift import NegativeShift
from .sharpen import SharpenConditioning

register_sharpener_folder()

NODE_CLASS_MAPPINGS = {
    "DICESharpenerLoader": LoadDICESharpener,
    "DICESharpenConditioning": SharpenConditioning,
    "DICENegativeShift": NegativeShift,
    "DICEAdapterLoader": LoadDICEAdapter,
    "DICENegativePrompt": DICENegativePrompt,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "DICESharpenerLoader": "Load DICE Sharpener",
    "DICESharpenConditioning": "Sharpen Conditioning",
    "DICENegativeShift": "Negative Shift",
    "DICEAdapterLoader": "Load DICE Guidance Adapter",
    "DICENegativePrompt": "DICE Negative Prompt",
}
