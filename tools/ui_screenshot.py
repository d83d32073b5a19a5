"""A screenshot of the ComfyUI page in headless Chromium with an example workflow and the three DICE nodes.

    python tools/ui_screenshot.py --comfy-root <ComfyUI folder> --out docs/comfyui_dice_workflow.png

Run it with ComfyUI's Python. Needs Chromium (Debian: apt install chromium) and Node.js; playwright-core is
installed into tools/ui_screenshot/node_modules on first use. ComfyUI runs on the CPU in a temporary base
directory holding the pack, a random-weight checkpoint and a random sharpener named as the workflow names them,
so the page shows the workflow as a user who has both files would see it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from browser import default_chromium, ensure_browser  # tools/, this script's folder

PACK_ROOT = Path(__file__).resolve().parents[1]
HERE = PACK_ROOT / "tools" / "ui_screenshot"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def widget_value(workflow: dict, node_type: str) -> str:
    return next(n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == node_type)


def prepare_base(base: Path, comfy_root: Path, workflow: dict) -> None:
    """custom_nodes with the pack, and the checkpoint and sharpener files the workflow asks for."""
    (base / "custom_nodes").mkdir(parents=True)
    # A returning user's settings: no first-visit template gallery over the canvas.
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    (base / "custom_nodes" / "ComfyUI-DICE").symlink_to(PACK_ROOT, target_is_directory=True)
    checkpoint = base / "models" / "checkpoints" / widget_value(workflow, "CheckpointLoaderSimple")
    subprocess.run([sys.executable, str(PACK_ROOT / "tools" / "make_random_checkpoint.py"), "--comfy-root", str(comfy_root),
                    "--out", str(checkpoint)], check=True)
    sys.path.insert(0, str(PACK_ROOT / "training"))
    from train import load_pack  # imports the pack as a package, as ComfyUI does

    load_pack()
    from dice_pack.sharpeners import Sharpener, SharpenerConfig, TrainingInfo, save_sharpener

    save_sharpener(base / "models" / "sharpeners" / widget_value(workflow, "DICESharpenerLoader"),
                   Sharpener(SharpenerConfig(embed_dim=768)), TrainingInfo(base_checkpoint=checkpoint.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy-root", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (default: $COMFYUI_PATH)")
    parser.add_argument("--workflow", default=str(PACK_ROOT / "example_workflows" / "dice_sd15_negative_prompt.json"))
    parser.add_argument("--out", default=str(PACK_ROOT / "docs" / "comfyui_dice_workflow.png"))
    parser.add_argument("--chromium", default=default_chromium())
    options = parser.parse_args()
    if not options.comfy_root:
        raise SystemExit("no ComfyUI: pass --comfy-root or set COMFYUI_PATH")
    ensure_browser(options.chromium)
    comfy_root = Path(options.comfy_root).resolve()
    workflow = json.loads(Path(options.workflow).read_text())
    base = Path(tempfile.mkdtemp(prefix="dice-ui-"))
    prepare_base(base, comfy_root, workflow)
    port, log = free_port(), base / "comfyui.log"
    process = subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                "--base-directory", str(base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:"],
                               cwd=comfy_root, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/object_info/DICESharpenerLoader", timeout=5).read()
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"ComfyUI did not start; its log:\n{log.read_text()[-4000:]}") from None
                time.sleep(1)
        Path(options.out).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["node", str(HERE / "screenshot.mjs"), url, options.workflow, options.out, options.chromium],
                       check=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
