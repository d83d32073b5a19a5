"""A screenshot of Automatic1111's txt2img page with the DICE accordion open, in headless Chromium.

    python tools/webui_screenshot.py --a1111 <Automatic1111 folder> --a1111-python <its Python> --out docs/a1111_dice.png

Run it with this pack's Python (torch and safetensors, for the random checkpoint and sharpener). Needs Chromium
(Debian: apt install chromium) and Node.js; playwright-core is installed into tools/ui_screenshot/node_modules on
first use. The host runs on the CPU with a temporary data dir (tools/webui_host.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from browser import default_chromium, ensure_browser  # tools/, this script's folder

PACK_ROOT = Path(__file__).resolve().parents[1]
HERE = PACK_ROOT / "tools" / "ui_screenshot"
SHARPENER = "dreamshaper_8_dice.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a1111", default=os.environ.get("A1111_PATH"), help="Automatic1111 folder ($A1111_PATH)")
    parser.add_argument("--a1111-python", default=os.environ.get("A1111_PYTHON"), help="its Python ($A1111_PYTHON)")
    parser.add_argument("--out", default=str(PACK_ROOT / "docs" / "a1111_dice.png"))
    parser.add_argument("--chromium", default=default_chromium())
    options = parser.parse_args()
    if not (options.a1111 and options.a1111_python):
        raise SystemExit("no Automatic1111: pass --a1111 and --a1111-python (or set A1111_PATH and A1111_PYTHON)")
    ensure_browser(options.chromium)
    sys.path.insert(0, str(PACK_ROOT / "training"))
    from train import load_pack

    load_pack()
    import torch

    from dice_pack.sharpeners import Sharpener, SharpenerConfig, TrainingInfo, save_sharpener
    from dice_pack.tools import webui_host

    data = Path(tempfile.mkdtemp(prefix="dice-a1111-"))
    try:
        sharpeners = webui_host.prepare_data_dir(data)
        torch.manual_seed(0)
        save_sharpener(sharpeners / SHARPENER, Sharpener(SharpenerConfig(embed_dim=768)),
                       TrainingInfo(base_checkpoint="dreamshaper_8.safetensors"))
        host = webui_host.start("a1111", Path(options.a1111).resolve(), options.a1111_python, data)
        try:
            Path(options.out).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["node", str(HERE / "webui_screenshot.mjs"), host.url, options.out, SHARPENER,
                            options.chromium], check=True)
        finally:
            host.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
