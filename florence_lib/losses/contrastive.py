"""Contrastive image-text losses as pure functions of features (open_clip's ``loss.py`` in spirit).

``unicl_loss`` is the paper's bidirectional loss, Eq. (1)-(3): in the image-label-description space every pair
whose labels are equal is a positive, so a caption that repeats in the batch is not treated as a negative of its
twins. ``clip_loss`` is the special case where every sample is its own label.

Distributed seam: each function scores the local rows against *all* columns. Without gathering the columns are
the local batch; a data-parallel caller passes the gathered features (and labels) of every rank, gathered with
gradient, as the ``all_*`` keywords. No function here talks to ``torch.distributed``.

Hard negatives (NegCLIP, Yuksekgonul et al. 2023): ``negative_text_features`` are texts that no image has as its
positive (e.g. a caption with two objects' colours swapped); they are appended as extra columns of the
image-to-text softmax with target 0, and get no text-to-image row. Without them every function is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def unicl_targets(
    labels: torch.Tensor, all_labels: torch.Tensor | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Soft targets ``[B, N]``: row i spreads probability 1 evenly over the columns whose label equals its own."""
    all_labels = labels if all_labels is None else all_labels
    positives = (labels[:, None] == all_labels[None, :]).to(dtype)
    return positives / positives.sum(1, keepdim=True)


def unicl_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    all_image_features: torch.Tensor | None = None,
    all_text_features: torch.Tensor | None = None,
    all_labels: torch.Tensor | None = None,
    negative_text_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """UniCL's bidirectional loss, averaged over the (local) batch: (image-to-text + text-to-image) / 2.

    Each row's cross-entropy is averaged over its positives (Eq. 2-3), so with all-distinct labels this is
    exactly CLIP's symmetric loss. Features must be L2-normalised; ``logit_scale`` is exp(log inverse temperature).
    Every local label must occur among ``all_labels`` (it does when the local batch is part of the gathered one).
    ``negative_text_features`` ``[K, D]``: hard negatives, extra image-to-text columns that are no image's
    positive (see the module doc); the caller passes every column it wants scored (a gathered set on many ranks).
    """
    all_image_features = image_features if all_image_features is None else all_image_features
    all_text_features = text_features if all_text_features is None else all_text_features
    targets = unicl_targets(labels, all_labels, image_features.dtype)
    columns, column_targets = all_text_features, targets
    if negative_text_features is not None:
        columns = torch.cat([all_text_features, negative_text_features])
        column_targets = F.pad(targets, (0, negative_text_features.shape[0]))
    image_to_text = F.cross_entropy(logit_scale * image_features @ columns.T, column_targets)
    text_to_image = F.cross_entropy(logit_scale * text_features @ all_image_features.T, targets)
    return (image_to_text + text_to_image) / 2


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    all_image_features: torch.Tensor | None = None,
    all_text_features: torch.Tensor | None = None,
    first_index: int = 0,
    negative_text_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: each image's only positive is its own text. ``first_index`` is where the local
    batch starts in the gathered one (rank * local batch size); ``negative_text_features`` as in ``unicl_loss``."""
    all_image_features = image_features if all_image_features is None else all_image_features
    all_text_features = text_features if all_text_features is None else all_text_features
    targets = torch.arange(image_features.shape[0], device=image_features.device) + first_index
    columns = all_text_features
    if negative_text_features is not None:  # appended after the texts: the targets' indices stay
        columns = torch.cat([all_text_features, negative_text_features])
    image_to_text = F.cross_entropy(logit_scale * image_features @ columns.T, targets)
    text_to_image = F.cross_entropy(logit_scale * text_features @ all_image_features.T, targets)
    return (image_to_text + text_to_image) / 2
