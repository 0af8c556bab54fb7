"""AdamW with decoupled weight decay on the weights that should shrink, and on nothing else.

Norm scales, biases, the temperature and embeddings are excluded: decaying them pulls LayerNorm gains, the logit
scale and token/position tables towards zero, which hurts contrastive training (CLIP, UniCL and timm all exclude
them). 1-d tensors are excluded by shape; everything else a model lists in ``no_weight_decay()`` by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from timm.optim import param_groups_weight_decay
from torch import nn


def no_weight_decay_patterns(model: nn.Module) -> set[str]:
    """The model's ``no_weight_decay()`` names as fnmatch patterns, matching them at any depth."""
    names = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    return {p for name in names for p in (name, f"*.{name}", f"{name}.*", f"*.{name}.*")}


def param_groups(model: nn.Module, weight_decay: float, lr_by_prefix: Mapping[str, float] | None = None
                 ) -> list[dict]:
    """Two AdamW groups: ``weight_decay`` for matrices and kernels, 0 for norms, biases, temperature, embeddings.

    ``lr_by_prefix`` ({parameter-name prefix: peak lr}) splits each group further, so parts of a model can learn at
    their own rate (the first matching prefix wins; parameters matching none keep the optimizer's ``lr``).
    """
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_weight_decay_patterns(model))
    if not lr_by_prefix:
        return groups
    name_of = {id(p): n for n, p in model.named_parameters()}
    split: list[dict] = []
    for group in groups:
        by_lr: dict[float | None, list] = {}
        for p in group["params"]:
            lr = next((v for k, v in lr_by_prefix.items() if name_of[id(p)].startswith(k)), None)
            by_lr.setdefault(lr, []).append(p)
        by_lr = {None: by_lr.pop(None), **by_lr} if None in by_lr else by_lr  # group 0 keeps the base lr (logged)
        split += [{**group, "params": ps, **({} if lr is None else {"lr": lr})} for lr, ps in by_lr.items()]
    return split


def build_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, betas: Sequence[float] = (0.9, 0.98), eps: float = 1e-6,
    fused: bool = True, lr_by_prefix: Mapping[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; ``fused`` uses the single-kernel update where the device supports it."""
    device = next(model.parameters()).device
    fused = fused and device.type in ("cpu", "cuda")
    return torch.optim.AdamW(param_groups(model, weight_decay, lr_by_prefix), lr=lr, betas=tuple(betas), eps=eps,
                             fused=fused)
