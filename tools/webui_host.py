"""Start Automatic1111 or Forge on the CPU with this extension, for the host tests, the speed bench and the screenshot.

The host runs from its own folder with its own Python, offline, with a temporary data dir holding the extension
(a symlink to this repository), optionally the test-only call counter, a random-weight SD1.5 checkpoint from
tools/make_webui_checkpoint.py and the sharpeners the caller puts in models/sharpeners. Nothing in the host's
folder is changed.
"""
from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..webui.glue import TITLE

PACK_ROOT = Path(__file__).resolve().parents[1]
COUNTER = PACK_ROOT / "tests" / "host_checks" / "webui_call_counter"
# The CPU settings each host needs (see docs/developers.md).
CPU_FLAGS = {"a1111": ["--use-cpu", "all", "--no-half", "--no-half-vae", "--precision", "full"],
             "forge": ["--always-cpu", "--all-in-fp32"]}


class WebUI:
    """A running host's HTTP API."""

    def __init__(self, kind: str, url: str, log: Path, process: subprocess.Popen) -> None:
        self.kind, self.url, self.log, self.process = kind, url, log, process

    def call(self, path: str, body: dict | None = None, timeout: float = 900):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{path}: HTTP {error.code}: {error.read().decode()[:2000]}") from None

    def generate(self, dice: list | None = None, endpoint: str = "txt2img", **request):
        """(images as uint8 arrays, the info object) of one generation; dice: the extension's args, in ui() order."""
        from PIL import Image
        import numpy as np

        body = {"send_images": True, "save_images": False, **request}
        if dice is not None:
            body["alwayson_scripts"] = {TITLE: {"args": dice}}
        answer = self.call(f"/sdapi/v1/{endpoint}", body)
        images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(i))).convert("RGB")) for i in answer["images"]]
        return images, json.loads(answer["info"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_data_dir(data: Path, with_counter: bool = False) -> Path:
    """extensions/ with this one (and the call counter), and the random checkpoint; returns models/sharpeners."""
    (data / "extensions").mkdir(parents=True, exist_ok=True)
    (data / "extensions" / "sd-webui-dice").symlink_to(PACK_ROOT, target_is_directory=True)
    if with_counter:
        (data / "extensions" / "dice-call-counter").symlink_to(COUNTER, target_is_directory=True)
    checkpoint = data / "models" / "Stable-diffusion" / "random_sd15.safetensors"
    subprocess.run([sys.executable, str(PACK_ROOT / "tools" / "make_webui_checkpoint.py"), "--out", str(checkpoint)],
                   check=True, capture_output=True)
    sharpeners = data / "models" / "sharpeners"
    sharpeners.mkdir(parents=True, exist_ok=True)
    return sharpeners


def start(kind: str, root: Path, python: str, data: Path, timeout: float = 300, counting: bool = False) -> WebUI:
    """The host serving its API on a free port, once its scripts answer; RuntimeError with its log if it fails."""
    port, log = free_port(), data / "host.log"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(
        [python, "launch.py", "--skip-prepare-environment", "--skip-install", "--skip-python-version-check",
         "--skip-torch-cuda-test", "--skip-version-check", *CPU_FLAGS[kind], "--disable-nan-check",
         "--no-download-sd-model", "--do-not-download-clip", "--data-dir", str(data), "--api", "--port", str(port)],
        cwd=root, stdout=log.open("w"), stderr=subprocess.STDOUT, env=environment)
    host = WebUI(kind, f"http://127.0.0.1:{port}", log, process)
    deadline = time.time() + timeout
    # The extensions' routes come last, after the webui's own API answers: wait for them too.
    ready = ["/sdapi/v1/script-info", "/dice/v1/sharpeners"] + (["/dice-test/calls"] if counting else [])
    while True:
        try:
            for path in ready:
                host.call(path, timeout=10)
            break
        except (urllib.error.URLError, ConnectionError, RuntimeError, json.JSONDecodeError, TimeoutError, OSError):
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise RuntimeError(f"{kind} did not start; its log:\n{log.read_text()[-4000:]}") from None
            time.sleep(2)
    if kind == "forge":
        host.call("/sdapi/v1/options", {"live_previews_enable": False})  # else it fetches a preview model
    return host
