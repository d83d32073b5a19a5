"""Prompts' text conditioning, from a ComfyUI text encoder or from a file written once by training/encode_prompts.py,
so a run can train without its text encoder in memory (Qwen-Image's 7-billion-weight Qwen2.5-VL beside a
20-billion-weight transformer). Both give a prompt's conditioning as CLIPTextEncode gives it."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .checkpoint import write_atomic

FORMAT = "dice_text_embeddings"
VERSION = "1"
# Beside the token embeddings ("tensor"), what a text encoder may give that reaches the model.
EXTRAS = {"pooled": "pooled_output", "attention_mask": "attention_mask"}


@torch.no_grad()
def encode_with_clip(clip, prompt: str) -> dict[str, torch.Tensor]:
    """As CLIPTextEncode encodes: the conditioning's tensor, its pooled output and a masked encoder's mask, in fp32 on
    the CPU; SystemExit for what this trainer cannot pass to the model."""
    [[cond, extras]] = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
    unsupported = sorted(k for k, v in extras.items() if isinstance(v, torch.Tensor)
                         and k not in ("pooled_output", "attention_mask"))
    if unsupported:
        raise SystemExit(f"the text encoder gives {', '.join(unsupported)} beside the tokens; this trainer does not "
                         "pass them to the model yet")
    mask = extras.get("attention_mask")
    if mask is not None and not bool(mask.bool().all()):
        raise SystemExit(f"the text encoder padded the prompt {prompt[:60]!r} (its attention mask hides tokens); this "
                         "trainer passes masks of unpadded prompts only")
    pooled = extras.get("pooled_output")
    return {"tensor": cond.float().cpu(), **({} if pooled is None else {"pooled": pooled.float().cpu()}),
            **({} if mask is None else {"attention_mask": mask.float().cpu()})}


def as_conditioning(encoded: dict[str, torch.Tensor]) -> list:
    """ComfyUI's CONDITIONING for one prompt's encoding, as CLIPTextEncode outputs it (a mask in integers, as the
    encoder gives it)."""
    options = {"pooled_output": encoded.get("pooled")}
    if "attention_mask" in encoded:
        options["attention_mask"] = encoded["attention_mask"].long()
    return [[encoded["tensor"], options]]


class ClipText:
    """Prompts encoded now by a ComfyUI CLIP object."""

    def __init__(self, clip) -> None:
        self.clip = clip

    def token_shape(self, prompt: str) -> tuple:
        """What decides whether two prompts' contexts have one length: the tokenizers' chunk counts (quick)."""
        tokens = self.clip.tokenize(prompt)
        return tuple(sorted((name, len(chunks), len(chunks[0]) if chunks else 0) for name, chunks in tokens.items()))

    def encode(self, prompt: str) -> dict[str, torch.Tensor]:
        return encode_with_clip(self.clip, prompt)

    def conditioning(self, prompt: str) -> list:
        return self.clip.encode_from_tokens_scheduled(self.clip.tokenize(prompt))

    def layer_key(self) -> str:
        """The CLIP layer in use, so cached images made with another clip skip are not reused."""
        return str(getattr(self.clip, "layer_idx", None))


class TextEmbeddingsFile:
    """Prompts' conditioning read from a file encode_prompts.py wrote; SystemExit naming the file and what is wrong."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                keys = set(handle.keys())
        except (OSError, SafetensorError) as error:
            raise SystemExit(f"--text-embeddings {self.path}: not a readable safetensors file ({error})") from None
        if metadata.get("format") != FORMAT:
            raise SystemExit(f"--text-embeddings {self.path}: not a text embeddings file (write one with "
                             "python training/encode_prompts.py)")
        if metadata.get("version") != VERSION:
            raise SystemExit(f"--text-embeddings {self.path}: version {metadata.get('version')}, this pack reads "
                             f"version {VERSION}; update the pack")
        prompts = json.loads(metadata["prompts"])
        self.index = {prompt: number for number, prompt in enumerate(prompts)}
        missing = [p for p, n in self.index.items() if f"{n}.tensor" not in keys]
        if missing:
            raise SystemExit(f"--text-embeddings {self.path}: no tensor for {len(missing)} of its prompts "
                             f"(the first: {missing[0][:60]!r}); write it again")
        self.clip_type = metadata.get("clip_type", "")
        self.text_encoders = json.loads(metadata.get("text_encoders", "[]"))
        self.keys = keys
        self._loaded: dict[str, dict[str, torch.Tensor]] = {}

    def encode(self, prompt: str) -> dict[str, torch.Tensor]:
        if prompt not in self._loaded:
            number = self.index.get(prompt)
            if number is None:
                raise SystemExit(f"--text-embeddings {self.path} holds no conditioning for the prompt {prompt[:60]!r}; "
                                 "encode every prompt of --data (and the empty prompt) with "
                                 "python training/encode_prompts.py --data <the same file>")
            with safe_open(str(self.path), framework="pt") as handle:
                self._loaded[prompt] = {name: handle.get_tensor(f"{number}.{name}")
                                        for name in ("tensor", *EXTRAS) if f"{number}.{name}" in self.keys}
        return self._loaded[prompt]

    def token_shape(self, prompt: str) -> tuple:
        return tuple(self.encode(prompt)["tensor"].shape[1:2])

    def conditioning(self, prompt: str) -> list:
        return as_conditioning(self.encode(prompt))

    def layer_key(self) -> str:
        return "file"  # the layer was chosen when the file was written


def write_text_embeddings(path: Path, encoded: dict[str, dict[str, torch.Tensor]], clip_type: str,
                          text_encoders: list[str]) -> None:
    """Each prompt's encoding (as encode_with_clip gives it) into one safetensors file, under a temporary name first."""
    tensors = {f"{number}.{name}": tensor.contiguous() for number, entry in enumerate(encoded.values())
               for name, tensor in entry.items()}
    metadata = {"format": FORMAT, "version": VERSION, "prompts": json.dumps(list(encoded)), "clip_type": clip_type,
                "text_encoders": json.dumps(text_encoders)}
    write_atomic(Path(path), lambda temporary: save_file(tensors, str(temporary), metadata=metadata))
