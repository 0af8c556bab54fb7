"""The engine's objectives for METER: ``objective(model, batch) -> (loss, logs)``.

Pretraining takes MLM and ITM in one forward pass: each row's text is masked, half the rows get another
row's image (ITM negatives), and the MLM loss is taken on the rows that kept their image only (a caption does
not describe someone else's image). METER runs a separate unmasked pass for ITM; one pass halves the CPU cost
and ITM still sees 85% of every caption.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .itm import itm_negatives
from .masking import IGNORE, mask_tokens


class PretrainObjective:
    """MLM (BERT's 15%, 80/10/10) + ITM (cross-entropy over match / no match), summed with equal weights."""

    def __init__(self, *, mask_id: int, vocab_size: int, special_ids: tuple[int, ...], mlm_probability: float = 0.15,
                 itm_fraction: float = 0.5,
                 similarity: Callable[[Mapping[str, Any]], torch.Tensor] | None = None) -> None:
        self.mask_id, self.vocab_size, self.special_ids = mask_id, vocab_size, special_ids
        self.mlm_probability, self.itm_fraction, self.similarity = mlm_probability, itm_fraction, similarity

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        images, ids, mask = batch["image"], batch["input_ids"], batch["attention_mask"]
        weights = self.similarity(batch) if self.similarity is not None else None
        index, match = itm_negatives(batch["texts"], fraction=self.itm_fraction, weights=weights)
        index, match = index.to(images.device), match.to(images.device)
        masked, labels = mask_tokens(ids, mask, mask_id=self.mask_id, vocab_size=self.vocab_size,
                                     special_ids=self.special_ids, probability=self.mlm_probability)
        labels = torch.where(match[:, None].bool(), labels, torch.full_like(labels, IGNORE))
        out = model(images[index], masked, mask)
        chosen = labels != IGNORE
        mlm_logits = model.mlm_head(out["text"][chosen])
        mlm_loss = F.cross_entropy(mlm_logits.float(), labels[chosen])
        itm_logits = model.itm_head(out["pooled"]).float()
        itm_loss = F.cross_entropy(itm_logits, match)
        logs = {"mlm_loss": mlm_loss.item(), "itm_loss": itm_loss.item(),
                "mlm_acc": (mlm_logits.argmax(-1) == labels[chosen]).float().mean().item(),
                "itm_acc": (itm_logits.argmax(-1) == match).float().mean().item()}
        return mlm_loss + itm_loss, logs


def cached_features(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The frozen towers' outputs a batch carries (``vl.feature_cache``; a blind set caches the zero image's)."""
    return {k: batch[k] for k in ("stage_map", "text_hidden") if k in batch}


class VQAObjective:
    """BCE against the soft scores, scaled by the number of answers (METER's, so that the gradient per answer
    logit does not shrink with the vocabulary). ``blind`` replaces every image by zeros: the question-only
    baseline trained the same way."""

    def __init__(self, blind: bool = False) -> None:
        self.blind = blind

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        images = torch.zeros_like(batch["image"]) if self.blind else batch["image"]
        logits = model(images, batch["input_ids"], batch["attention_mask"], **cached_features(batch)).float()
        targets = batch["targets"]
        loss = F.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1]
        score = targets.gather(1, logits.argmax(1, keepdim=True)).mean()
        return loss, {"vqa_score": score.item()}
