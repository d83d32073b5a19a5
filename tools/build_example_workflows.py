"""Write example_workflows/*.json: SD1.5 text-to-image at cfg 1 with DICE, in ComfyUI's UI (template) format.

    python tools/build_example_workflows.py
"""
from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "example_workflows"
CHECKPOINT = "dreamshaper_8.safetensors"
SHARPENER = "dreamshaper_8_dice.safetensors"
ADAPTER = "dreamshaper_8_dice_adapter.safetensors"
PROMPT = "a cozy cabin in a snowy forest at dusk, warm light in the windows, detailed, photograph"
NEGATIVE = "blurry, low quality, watermark, text"
CFG = 5.0  # the adapter's cfg knob, in CFG's own units
# DICE Negative Prompt's NAG settings: the node's own defaults.
NEGATIVE_SCALE, NEGATIVE_TAU, NEGATIVE_ALPHA = 3.0, 2.5, 0.25

# Output slots of each node type used here: (name, type).
OUTPUTS = {
    "CheckpointLoaderSimple": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
    "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "DICESharpenerLoader": [("sharpener", "DICE_SHARPENER")],
    "DICESharpenConditioning": [("conditioning", "CONDITIONING")],
    "DICENegativeShift": [("conditioning", "CONDITIONING")],
    "DICEAdapterLoader": [("model", "MODEL")],
    "DICENegativePrompt": [("model", "MODEL")],
    "EmptyLatentImage": [("LATENT", "LATENT")],
    "KSampler": [("LATENT", "LATENT")],
    "KSamplerAdvanced": [("LATENT", "LATENT")],
    "VAEDecode": [("IMAGE", "IMAGE")],
    "SaveImage": [],
    "Note": [],
}
# Linked inputs of each node type, in slot order: (name, type).
INPUTS = {
    "CLIPTextEncode": [("clip", "CLIP")],
    "DICESharpenConditioning": [("positive", "CONDITIONING"), ("reference", "CONDITIONING"),
                                ("sharpener", "DICE_SHARPENER")],
    "DICENegativeShift": [("conditioning", "CONDITIONING"), ("negative", "CONDITIONING"), ("null", "CONDITIONING")],
    "DICEAdapterLoader": [("model", "MODEL")],
    "DICENegativePrompt": [("model", "MODEL"), ("negative", "CONDITIONING")],
    "KSampler": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                 ("latent_image", "LATENT")],
    "KSamplerAdvanced": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                         ("latent_image", "LATENT")],
    "VAEDecode": [("samples", "LATENT"), ("vae", "VAE")],
    "SaveImage": [("images", "IMAGE")],
}


class Graph:
    """Collects nodes and links and writes the UI JSON the template browser shows."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def node(self, kind: str, pos: tuple[int, int], size: tuple[int, int], widgets: list, title: str = "") -> int:
        node_id = len(self.nodes) + 1
        self.nodes.append({
            "id": node_id, "type": kind, "pos": list(pos), "size": list(size), "flags": {}, "order": node_id - 1,
            "mode": 0,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in INPUTS.get(kind, [])],
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(OUTPUTS[kind])],
            "properties": {"Node name for S&R": kind}, "widgets_values": widgets,
            **({"title": title} if title else {}),
        })
        return node_id

    def link(self, source: int, slot: int, target: int, input_name: str) -> None:
        link_id = len(self.links) + 1
        out = self.nodes[source - 1]["outputs"][slot]
        target_inputs = self.nodes[target - 1]["inputs"]
        index = next(i for i, entry in enumerate(target_inputs) if entry["name"] == input_name)
        out["links"].append(link_id)
        target_inputs[index]["link"] = link_id
        self.links.append([link_id, source, slot, target, index, out["type"]])

    def write(self, name: str) -> None:
        document = {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                    "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.85, "offset": [40, 40]}},
                    "version": 0.4}
        (OUT / name).write_text(json.dumps(document, indent=2) + "\n")


def base_graph(with_negative: bool) -> tuple[Graph, int, int, int]:
    """Checkpoint, prompts, sharpener; returns the graph, the conditioning for the KSampler, the empty prompt and the
    plain prompt."""
    g = Graph()
    checkpoint = g.node("CheckpointLoaderSimple", (30, 200), (320, 100), [CHECKPOINT])
    positive = g.node("CLIPTextEncode", (400, 40), (420, 150), [PROMPT], "Prompt")
    empty = g.node("CLIPTextEncode", (400, 240), (420, 90), [""], "Empty prompt (reference)")
    loader = g.node("DICESharpenerLoader", (400, 560), (420, 60), [SHARPENER])
    sharpen = g.node("DICESharpenConditioning", (880, 200), (320, 130), [1.0])
    for encoder in (positive, empty):
        g.link(checkpoint, 1, encoder, "clip")
    g.link(positive, 0, sharpen, "positive")
    g.link(loader, 0, sharpen, "sharpener")
    if not with_negative:
        g.link(empty, 0, sharpen, "reference")
        return g, sharpen, empty, positive
    negative = g.node("CLIPTextEncode", (400, 380), (420, 130), [NEGATIVE], "Negative prompt")
    g.link(checkpoint, 1, negative, "clip")
    # The paper's negative-prompt form: r(c, c_neg), then the shift −β·(c_neg − c_null).
    g.link(negative, 0, sharpen, "reference")
    shift = g.node("DICENegativeShift", (880, 400), (320, 130), [0.0])
    g.link(sharpen, 0, shift, "conditioning")
    g.link(negative, 0, shift, "negative")
    g.link(empty, 0, shift, "null")
    return g, shift, empty, positive


def sampler_tail(g: Graph, conditioning: int, empty: int, note: str, model: tuple[int, int] = (1, 0)) -> None:
    """Empty latent, KSampler at cfg 1.0 on model (node, slot), decode, save, and a note for the user."""
    latent = g.node("EmptyLatentImage", (880, 620), (320, 110), [512, 512, 1])
    sampler = g.node("KSampler", (1250, 200), (320, 270), [42, "fixed", 20, 1.0, "dpmpp_2m", "karras", 1.0])
    g.link(*model, sampler, "model")
    g.link(conditioning, 0, sampler, "positive")
    # At cfg 1.0 ComfyUI never evaluates this input; it is connected because the KSampler requires it.
    g.link(empty, 0, sampler, "negative")
    g.link(latent, 0, sampler, "latent_image")
    decode_and_save(g, sampler, note, 260)


def decode_and_save(g: Graph, sampler: int, note: str, note_height: int) -> None:
    """The last sampler's latent decoded with the checkpoint's VAE and saved; the note beside the graph."""
    decode = g.node("VAEDecode", (1620, 200), (210, 50), [])
    save = g.node("SaveImage", (1620, 300), (420, 460), ["DICE"])
    g.node("Note", (30, 400), (330, note_height), [note])
    g.link(sampler, 0, decode, "samples")
    g.link(1, 2, decode, "vae")
    g.link(decode, 0, save, "images")


def cfg_then_dice_tail(g: Graph, conditioning: int, empty: int, prompt: int, note: str, steps: int = 12,
                       cfg: float = 5.0) -> None:
    """Two KSampler (Advanced): CFG on the plain prompt for all but the last two steps, then DICE at cfg 1.0."""
    latent = g.node("EmptyLatentImage", (880, 620), (320, 110), [512, 512, 1])
    first = g.node("KSamplerAdvanced", (1250, 40), (320, 330),
                   ["enable", 42, "fixed", steps, cfg, "dpmpp_2m", "karras", 0, steps - 2, "enable"], "CFG steps")
    second = g.node("KSamplerAdvanced", (1250, 420), (320, 330),
                    ["disable", 42, "fixed", steps, 1.0, "dpmpp_2m", "karras", steps - 2, 10000, "disable"],
                    "DICE steps (cfg 1.0)")
    for sampler in (first, second):
        g.link(1, 0, sampler, "model")
        g.link(empty, 0, sampler, "negative")
    g.link(prompt, 0, first, "positive")  # the plain prompt: CFG guides it with the empty prompt as uncond
    g.link(latent, 0, first, "latent_image")
    g.link(conditioning, 0, second, "positive")
    g.link(first, 0, second, "latent_image")
    decode_and_save(g, second, note, 300)


def adapter_graph() -> tuple[Graph, int, int, int]:
    """Checkpoint, the guidance adapter on its model, the prompt and the empty prompt; returns the graph, the adapter,
    the prompt and the empty prompt."""
    g = Graph()
    checkpoint = g.node("CheckpointLoaderSimple", (30, 200), (320, 100), [CHECKPOINT])
    positive = g.node("CLIPTextEncode", (400, 40), (420, 150), [PROMPT], "Prompt")
    empty = g.node("CLIPTextEncode", (400, 240), (420, 90), [""], "Empty prompt (never run at cfg 1.0)")
    adapter = g.node("DICEAdapterLoader", (880, 40), (320, 130), [ADAPTER, 1.0, CFG])
    g.link(checkpoint, 0, adapter, "model")
    for encoder in (positive, empty):
        g.link(checkpoint, 1, encoder, "clip")
    return g, adapter, positive, empty


def main() -> None:
    OUT.mkdir(exist_ok=True)
    g, conditioning, empty, _ = base_graph(with_negative=False)
    sampler_tail(g, conditioning, empty,
                 "DICE at cfg 1.0: one UNet call per step instead of two.\n\n"
                 f"Put your checkpoint in models/checkpoints and its sharpener ({SHARPENER}, made by "
                 "training/train.py) in models/sharpeners.\n\nalpha acts like the guidance scale: "
                 "0 = unguided, 1 = the CFG the sharpener was trained for.\n\nKeep the KSampler's cfg at 1.0.")
    g.write("dice_sd15_text_to_image.json")
    g, conditioning, empty, _ = base_graph(with_negative=True)
    sampler_tail(g, conditioning, empty,
                 "DICE with a negative prompt at cfg 1.0.\n\nAt cfg 1.0 the KSampler's negative input is never "
                 "run, so the negative prompt acts through the sharpener's reference and Negative Shift "
                 "(beta).\n\nA sharpener trained with --negatives handles negative prompts best; with one, beta 0 "
                 "did best on the pack's testbed: raise it only if the negative prompt is not respected.")
    g.write("dice_sd15_negative_prompt.json")
    g, conditioning, empty, prompt = base_graph(with_negative=False)
    cfg_then_dice_tail(g, conditioning, empty, prompt,
                       "CFG, then DICE for the last two steps: 22 UNet calls for 12 steps instead of 24.\n\n"
                       "On the pack's testbed, at 10 and 16 calls per image, this gave better-aligned images than "
                       "CFG or DICE alone (README, the frontier); at 20 calls and more, plain CFG at half the steps "
                       "did as well or better.\n\nBoth samplers must share steps, sampler and scheduler; the first ends "
                       "where the second starts (steps − 2).")
    g.write("dice_sd15_cfg_then_dice.json")
    g, adapter, prompt, empty = adapter_graph()
    sampler_tail(g, prompt, empty,
                 "The DICE guidance adapter at cfg 1.0: one UNet call per step, with an adapter that sees every step.\n\n"
                 f"Put its file ({ADAPTER}, made by training/train.py --train adapter) in models/loras. It is a LoRA: "
                 "the plain Load LoRA node loads it too, but Load DICE Guidance Adapter checks that it is one and fits "
                 "your checkpoint.\n\nThe adapter's cfg is the guidance scale in CFG's own units (3-9 as you would "
                 "set CFG; 1 = unguided); strength multiplies it as any LoRA's.\n\nKeep the KSampler's cfg at 1.0.",
                 model=(adapter, 0))
    g.write("dice_sd15_guidance_adapter.json")
    g, adapter, prompt, empty = adapter_graph()
    negative = g.node("CLIPTextEncode", (400, 380), (420, 130), [NEGATIVE], "Negative prompt")
    g.link(1, 1, negative, "clip")
    steer = g.node("DICENegativePrompt", (880, 220), (320, 150), [NEGATIVE_SCALE, NEGATIVE_TAU, NEGATIVE_ALPHA])
    g.link(adapter, 0, steer, "model")
    g.link(negative, 0, steer, "negative")
    sampler_tail(g, prompt, empty,
                 "The guidance adapter with a negative prompt, still one UNet call per step at cfg 1.0.\n\n"
                 "At cfg 1.0 the KSampler's own negative input is never run: DICE Negative Prompt puts the negative "
                 "prompt inside the adapted model's one call (every cross-attention is pushed away from it).\n\n"
                 "scale: how hard (1 = off). Set the guidance itself with the adapter's cfg.",
                 model=(steer, 0))
    g.write("dice_sd15_adapter_negative_prompt.json")


if __name__ == "__main__":
    main()
