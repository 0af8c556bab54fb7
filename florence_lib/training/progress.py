"""What a training loop shows while it runs: a tqdm bar where someone watches, plain log lines where nobody does.

Multi-day runs end up in Slurm logs and ``nohup`` files, where a progress bar is a wall of carriage returns and
512 ranks draw 512 interleaved bars. So: only rank 0 shows anything; in a terminal or a notebook it draws a bar,
elsewhere it prints one line every ``log_every`` steps to stdout::

    pretrain stage1 step 120/600 loss 3.4127 lr 4.20e-04 images/s 85.3 elapsed 0:01:24 eta 0:05:36

``FLORENCE_PROGRESS=bar|lines|both|none`` overrides the choice (``auto``).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

MODES = ("auto", "bar", "lines", "both", "none")


def interactive() -> bool:
    """A person is watching: stderr is a terminal, or we run inside a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def resolve_mode(mode: str = "auto", *, main_process: bool = True) -> str:
    """``bar``, ``lines``, ``both`` or ``none`` for this process (other ranks: ``none``)."""
    mode = os.environ.get("FLORENCE_PROGRESS", mode) if mode == "auto" else mode
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)} (FLORENCE_PROGRESS?)")
    if not main_process:
        return "none"
    if mode == "auto":
        return "bar" if interactive() else "lines"
    return mode


def _duration(seconds: float) -> str:
    return str(_dt.timedelta(seconds=round(max(seconds, 0.0))))


class Progress:
    """Progress of a loop from step ``initial`` to ``total``; ``update`` once per step with its logged scalars."""

    def __init__(self, total: int, initial: int, desc: str, *, log_every: int, mode: str = "auto",
                 main_process: bool = True, stream: TextIO | None = None) -> None:
        self.mode = resolve_mode(mode, main_process=main_process)
        self.total, self.initial, self.desc, self.log_every = total, initial, desc, max(int(log_every or 0), 1)
        self.stream = stream or sys.stdout
        self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False) if self.mode in ("bar", "both") \
            else None
        self.start = self.last_time = time.perf_counter()
        self.images = self.last_images = 0
        self.lines: list[str] = []

    def update(self, step: int, logs: dict[str, Any], images: int = 0) -> None:
        self.images += images
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}")
        if self.mode in ("lines", "both") and (step % self.log_every == 0 or step == self.total):
            self.print_line(step, logs)

    def line(self, step: int, logs: dict[str, Any]) -> str:
        now = time.perf_counter()
        window = now - self.last_time
        rate = (self.images - self.last_images) / window if window > 0 else 0.0
        done, elapsed = step - self.initial, now - self.start
        eta = elapsed / done * (self.total - step) if done else 0.0
        self.last_time, self.last_images = now, self.images
        text = f"{self.desc} step {step}/{self.total} loss {logs['loss']:.4f}"
        if "lr" in logs:
            text += f" lr {logs['lr']:.2e}"
        return text + f" images/s {rate:.1f} elapsed {_duration(elapsed)} eta {_duration(eta)}"

    def print_line(self, step: int, logs: dict[str, Any]) -> None:
        text = self.line(step, logs)
        self.lines.append(text)
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
