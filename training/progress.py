"""The progress bar SD trainers' users expect (tqdm: rate, ETA, the latest figures); sparse updates in a log."""
from __future__ import annotations

import sys

from tqdm import tqdm


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Call update(step, **figures) as work is done; closes itself at the last step."""

    def __init__(self, total: int, label: str, unit: str = "it", start: int = 0, stream=None) -> None:
        stream = stream or sys.stderr
        # A log file gets an update every half minute or so rather than a redraw per step.
        interactive = stream.isatty()
        self.bar = tqdm(total=total, initial=start, desc=label, unit=unit, file=stream, dynamic_ncols=interactive,
                        mininterval=0.2 if interactive else 30.0, ascii=not interactive)

    def update(self, step: int, **figures: float) -> None:
        if figures:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in figures.items()}, refresh=False)
        self.bar.update(step - self.bar.n)
        if step >= self.bar.total:
            self.bar.close()
