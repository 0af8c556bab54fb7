"""Objectives for :class:`~florence_lib.training.engine.Engine`: ``objective(model, batch) -> (loss, logs)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from ..distributed import gather_features, rank
from ..losses import clip_loss, unicl_loss


class ContrastiveObjective:
    """UniCL (positives = equal labels, paper Eq. 1-3) or CLIP (positives = the diagonal) on image-text pairs.

    The loss is computed in fp32 even under bf16 autocast: a softmax over the batch with a scale up to 100 needs
    the mantissa. Logs the temperature's scale (exp of the clamped log inverse temperature).
    """

    def __init__(self, loss: Literal["unicl", "clip"] = "unicl") -> None:
        if loss not in ("unicl", "clip"):
            raise ValueError(f"loss: {loss!r} is not one of 'unicl', 'clip'")
        self.loss = loss

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        image, text, scale = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        loss = self.features_loss(image.float(), text.float(), batch["label"], scale.float())
        return loss, {"logit_scale": scale.item()}

    def features_loss(
        self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """The loss of this rank's features against every rank's (gathered with gradients; the local batch on one
        process); the gradient cache calls it on cached features."""
        if self.loss == "unicl":
            return unicl_loss(image, text, labels, scale, **gather_features(image, text, labels))
        return clip_loss(image, text, scale, first_index=rank() * len(image), **gather_features(image, text))
