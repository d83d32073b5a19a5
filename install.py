"""Run by ComfyUI-Manager after it installs requirements.txt, and by Automatic1111 / Forge at launch; safe to run
by hand, again and again.

Installs only the requirements that are missing, with the interpreter that runs the host, never torch;
and creates models/sharpeners when the pack sits in a ComfyUI's custom_nodes folder.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACK_DIR = Path(os.path.abspath(__file__)).parent  # not resolve(): a symlinked pack still finds custom_nodes
# ComfyUI ships its own torch build (CUDA, ROCm, MPS, CPU); installing one here would replace it.
NEVER_INSTALL = {"torch", "torchvision", "torchaudio"}


def requirement_name(line: str) -> str:
    """'safetensors>=0.4.2' → 'safetensors'; '' for comments and blank lines."""
    line = line.split("#", 1)[0].strip()
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return match.group(0).lower().replace("_", "-") if match else ""


def is_installed(name: str) -> bool:
    """Whether a distribution of that name is installed in this Python."""
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def missing_requirements(requirements: Path) -> list[str]:
    """Requirement lines whose package is not installed, torch and its siblings left out."""
    lines = (line.split("#", 1)[0].strip() for line in requirements.read_text().splitlines())
    return [line for line in lines
            if requirement_name(line) and requirement_name(line) not in NEVER_INSTALL
            and not is_installed(requirement_name(line))]


def comfyui_root(pack_dir: Path) -> Path | None:
    """The ComfyUI folder when the pack lies in its custom_nodes (under any folder name)."""
    parent = pack_dir.parent
    if parent.name == "custom_nodes" and (parent.parent / "folder_paths.py").is_file():
        return parent.parent
    return None


def main() -> int:
    if not is_installed("torch"):
        print("[DICE] torch is not installed in this Python; install ComfyUI, Automatic1111 or Forge first (each brings torch).")
        return 1
    missing = missing_requirements(PACK_DIR / "requirements.txt")
    if missing:
        print(f"[DICE] installing {', '.join(missing)}")
        subprocess.check_call([sys.executable, "-m", "pip", "install", *missing])
    else:
        print("[DICE] all requirements are present")
    root = comfyui_root(PACK_DIR)
    if root is not None:
        folder = root / "models" / "sharpeners"
        folder.mkdir(parents=True, exist_ok=True)
        print(f"[DICE] sharpeners go in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
