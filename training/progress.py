"""A progress bar with rate, ETA and the latest figures, as SD trainers show; plain lines when not a terminal."""
from __future__ import annotations

import sys
import time


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Call update(step, **figures) as work is done; it draws at most a few times a second."""

    def __init__(self, total: int, label: str, unit: str = "it", start: int = 0, stream=None) -> None:
        self.total, self.label, self.unit, self.start_step = total, label, unit, start
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.started = time.time()
        self.last_drawn = 0.0
        self.last_line_fraction = -1.0

    def update(self, step: int, **figures: float) -> None:
        now = time.time()
        done = step - self.start_step
        rate = done / max(now - self.started, 1e-9)
        remaining = (self.total - step) / rate if rate > 0 else 0.0
        fraction = step / self.total if self.total else 1.0
        shown = " ".join(f"{k}={v:.4g}" for k, v in figures.items())
        text = (f"{self.label} {step}/{self.total} [{format_seconds(now - self.started)}<{format_seconds(remaining)}, "
                f"{rate:.2f} {self.unit}/s] {shown}")
        if self.interactive:
            if now - self.last_drawn > 0.2 or step == self.total:
                width = 24
                bar = "█" * int(width * fraction) + "·" * (width - int(width * fraction))
                self.stream.write(f"\r{bar} {text}\033[K" + ("\n" if step == self.total else ""))
                self.stream.flush()
                self.last_drawn = now
        elif fraction - self.last_line_fraction >= 0.05 or step == self.total:
            self.stream.write(f"{int(100 * fraction):3d}% {text}\n")
            self.stream.flush()
            self.last_line_fraction = fraction
