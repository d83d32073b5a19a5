"""Load each sharpener file once; reload only when the file on disk changes. Shared by the ComfyUI nodes and the
Automatic1111 / Forge extension."""
from __future__ import annotations

import logging
import os
import threading

from .fileformat import SharpenerFile, load_sharpener


class SharpenerCache:
    """Maps a path to its loaded sharpener, keyed by modification time and size."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[int, int], SharpenerFile]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def stamp(path: str) -> tuple[int, int]:
        """What changes when the file is rewritten."""
        status = os.stat(path)
        return status.st_mtime_ns, status.st_size

    def get(self, path: str) -> SharpenerFile:
        """The sharpener at path, loading it only if it is new or changed."""
        path = os.path.abspath(path)
        stamp = self.stamp(path)
        with self._lock:
            cached = self._entries.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            loaded = load_sharpener(path)
            logging.info("DICE: loaded %s", loaded.summary())
            self._entries[path] = (stamp, loaded)
            return loaded
