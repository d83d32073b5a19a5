"""Find the ComfyUI that a checkpoint is trained with."""
from __future__ import annotations

from pathlib import Path


def is_comfy_root(folder: Path) -> bool:
    return (folder / "comfy" / "sd.py").is_file() and (folder / "folder_paths.py").is_file()


def find_comfy_root(explicit: str | None, pack_root: Path) -> Path | None:
    """--comfy-root / COMFYUI_PATH, else the ComfyUI whose custom_nodes holds the pack; None if neither."""
    if explicit:
        folder = Path(explicit).expanduser().resolve()
        if not is_comfy_root(folder):
            raise SystemExit(f"--comfy-root/COMFYUI_PATH {folder}: no ComfyUI there (comfy/sd.py is missing)")
        return folder
    parent = pack_root.parent
    if parent.name == "custom_nodes" and is_comfy_root(parent.parent):
        return parent.parent
    return None
