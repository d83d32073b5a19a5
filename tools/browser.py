"""Headless Chromium driven by playwright-core, for the UI screenshots: check it is there, install the driver once."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DRIVER = Path(__file__).resolve().parent / "ui_screenshot"


def default_chromium() -> str:
    return shutil.which("chromium") or "/usr/bin/chromium"


def ensure_browser(chromium: str) -> None:
    """SystemExit naming what is missing; playwright-core goes into tools/ui_screenshot/node_modules on first use."""
    if not Path(chromium).exists():
        raise SystemExit(f"no Chromium at {chromium}: install it (Debian: apt install chromium) or pass --chromium")
    if not shutil.which("node"):
        raise SystemExit("Node.js is needed to drive Chromium (playwright-core): install node and npm")
    if not (DRIVER / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=DRIVER, check=True)
