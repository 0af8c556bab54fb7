"""Learning-rate schedule: linear warmup then cosine decay, as a multiplier on each group's base lr.

One schedule spans the whole run (all phases), so that a phase change or a resume never restarts the decay.
"""

from __future__ import annotations

import math
from functools import partial

import torch


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """The lr multiplier for optimizer step ``step`` (0-based).

    Warmup rises linearly to 1 so that the first step already moves (``(step + 1) / warmup_steps``); the cosine
    then falls from 1 to ``min_lr_ratio`` at ``total_steps`` and stays there if training runs longer.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0,
    last_step: int = -1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over :func:`warmup_cosine`; ``last_step`` continues a schedule on a fresh optimizer."""
    fn = partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio)
    if last_step >= 0:  # LambdaLR needs initial_lr to start mid-schedule
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn, last_epoch=last_step)
