"""Objectives for :class:`~florence_lib.training.engine.Engine`: ``objective(model, batch) -> (loss, logs)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from ..distributed import gather_features, rank, world_size
from ..losses import clip_loss, unicl_loss


class ContrastiveObjective:
    """UniCL (positives = equal labels, paper Eq. 1-3) or CLIP (positives = the diagonal) on image-text pairs.

    The loss is computed in fp32 even under bf16 autocast: a softmax over the batch with a scale up to 100 needs
    the mantissa. Logs the temperature's scale (exp of the clamped log inverse temperature).

    A batch with hard negatives (``negative_input_ids`` / ``negative_attention_mask``, see ``PairCollate``) has
    them encoded by the same text tower and scored as extra image-to-text columns (``losses.unicl_loss``), on one
    process only (``PretrainConfig.validate`` refuses them with the gradient cache and DeepSpeed); it logs their
    count as ``negatives``.
    """

    def __init__(self, loss: Literal["unicl", "clip"] = "unicl") -> None:
        if loss not in ("unicl", "clip"):
            raise ValueError(f"loss: {loss!r} is not one of 'unicl', 'clip'")
        self.loss = loss

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        image, text, scale = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        negatives, logs = None, {"logit_scale": scale.item()}
        if "negative_input_ids" in batch:
            negatives = model.encode_text(batch["negative_input_ids"], batch["negative_attention_mask"]).float()
            logs["negatives"] = float(len(negatives))
        loss = self.features_loss(image.float(), text.float(), batch["label"], scale.float(), negatives)
        return loss, logs

    def features_loss(
        self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor,
        negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of this rank's features against every rank's (gathered with gradients; the local batch on one
        process); the gradient cache calls it on cached features. ``negatives``: hard-negative text features,
        extra image-to-text columns (one process only: they are not gathered)."""
        if negatives is not None and world_size() > 1:
            raise RuntimeError("hard negatives are not gathered across ranks; train them in one process")
        if self.loss == "unicl":
            return unicl_loss(image, text, labels, scale, **gather_features(image, text, labels),
                              negative_text_features=negatives)
        return clip_loss(image, text, scale, first_index=rank() * len(image), **gather_features(image, text),
                         negative_text_features=negatives)
