"""Resumable training state: sharpener and adapter, optimizer, step, data-order generator and config in one file.

Written with torch.save to a temporary name and renamed; read with torch.load(weights_only=True), so a
checkpoint never runs code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def write_atomic(path: Path, write) -> None:
    """write(temporary_path), then rename onto path; a failed write (a full disk) leaves the old file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # processes of one run may write one cache file
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        error.filename = error.filename or str(path)
        raise


def save_state(path: Path, student: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
               generator: torch.Generator, config: dict, inputs: dict | None = None, average: dict | None = None) -> None:
    """student: a training.student.Student; its sharpener and adapter are kept apart (either may be absent). inputs:
    the pool of sampling-run states a run draws from, when it trains on them; average: the weight average's state."""
    parts = {name: getattr(student, name) for name in ("sharpener", "adapter")}
    state = {**{k: ({} if v is None else v.state_dict()) for k, v in parts.items()},
             "optimizer": optimizer.state_dict(), "step": step, "generator": generator.get_state(),
             "config": json.dumps(config, sort_keys=True)}
    if inputs is not None:
        state["inputs"] = inputs
    if average is not None:
        state["average"] = average
    write_atomic(path, lambda temporary: torch.save(state, temporary))


def load_state(path: Path) -> dict:
    """The saved state; raises ValueError naming the file when it is not a training checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable training checkpoint ({error})") from None
    missing = {"sharpener", "optimizer", "step", "generator", "config"} - set(state)
    if missing:
        raise ValueError(f"{path}: not a DICE training checkpoint (lacks {', '.join(sorted(missing))})")
    state["config"] = json.loads(state["config"])
    return state
