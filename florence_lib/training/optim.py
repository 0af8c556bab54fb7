"""AdamW with decoupled weight decay on the weights that should shrink, and on nothing else.

Norm scales, biases, the temperature and embeddings are excluded: decaying them pulls LayerNorm gains, the logit
scale and token/position tables towards zero, which hurts contrastive training (CLIP, UniCL and timm all exclude
them). 1-d tensors are excluded by shape; everything else a model lists in ``no_weight_decay()`` by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.optim import param_groups_weight_decay
from torch import nn


def no_weight_decay_patterns(model: nn.Module) -> set[str]:
    """The model's ``no_weight_decay()`` names as fnmatch patterns, matching them at any depth."""
    names = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    return {p for name in names for p in (name, f"*.{name}", f"{name}.*", f"*.{name}.*")}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: ``weight_decay`` for matrices and kernels, 0 for norms, biases, temperature, embeddings."""
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_weight_decay_patterns(model))


def build_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, betas: Sequence[float] = (0.9, 0.98), eps: float = 1e-6,
    fused: bool = True,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; ``fused`` uses the single-kernel update where the device supports it."""
    device = next(model.parameters()).device
    fused = fused and device.type in ("cpu", "cuda")
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps, fused=fused)
