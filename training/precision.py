"""The frozen model's precision, and the loss scaling that keeps fp16 gradients from underflowing."""
from __future__ import annotations

import torch

# --mixed-precision: the frozen model's weights and arithmetic; auto is the host's own pick (ComfyUI: fp16 on most
# GPUs, fp32 on the CPU), so the sharpener learns the predictions the KSampler computes. "no" is fp32 (older runs).
PRECISIONS = {"auto": None, "fp32": torch.float32, "no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def loss_scaler(compute_dtype: torch.dtype, device: torch.device) -> torch.amp.GradScaler:
    """fp16 in the backward pass flushes small gradients to zero on their way back to the embedding: scale the loss
    up and the sharpener's gradients back down. bf16 and fp32 have fp32's exponent range and need no scaling."""
    return torch.amp.GradScaler(device.type, enabled=compute_dtype == torch.float16)


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype).split(".")[-1])
