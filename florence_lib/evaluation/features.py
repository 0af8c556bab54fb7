"""Frozen feature extraction: the one place where images and texts go through an encoder for evaluation.

Protocols take features (tensors) or encoders (plain callables), never a model class, so that they can be
tested with oracle and random encoders and reused for any checkpoint. ``image_encoder`` / ``text_encoder``
turn a UniCL model (and tokenizer) into such callables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.errors import collate_skip_none

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]
"""images ``(B, C, H, W)`` -> features ``(B, D)``"""
TextEncoder = Callable[[list[str]], torch.Tensor]
"""list of B strings -> features ``(B, D)``"""


class ImageFeatures(NamedTuple):
    features: torch.Tensor  # (N, D) float32 on CPU
    labels: torch.Tensor | None  # (N,) int64, when the data yields labels
    flipped: torch.Tensor | None  # (N, D) features of the horizontally flipped images, when asked for


def _images_and_labels(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accept the batch shapes our datasets yield: a tensor, ``(images, labels, ...)`` or a mapping."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        images, labels = batch["image"], batch.get("label")
    elif isinstance(batch, Sequence) and len(batch) > 0:
        images, labels = batch[0], batch[1] if len(batch) > 1 else None
    else:
        raise TypeError(f"cannot find images in a batch of type {type(batch).__name__}")
    if not (isinstance(labels, torch.Tensor) and not labels.is_floating_point() and labels.ndim == 1):
        labels = None  # e.g. captions or image ids: not class labels
    return images, labels


@torch.no_grad()
def image_features(
    encode_image: ImageEncoder,
    data: Dataset | DataLoader | Iterable[Any],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    flip: bool = False,
    num_workers: int = 0,
    desc: str = "image features",
) -> ImageFeatures:
    """Encode every image of ``data`` in order (no shuffling); ``flip`` also encodes the mirrored images.
    Images a loader could not read (it yields None) are left out: compare the count with the data's."""
    if isinstance(data, Dataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                          collate_fn=collate_skip_none)
    feats, flipped, labels = [], [], []
    for batch in tqdm(data, desc=desc, leave=False):
        images, batch_labels = _images_and_labels(batch)
        images = images.to(device)
        feats.append(encode_image(images).float().cpu())
        if flip:
            flipped.append(encode_image(images.flip(-1)).float().cpu())
        if batch_labels is not None:
            labels.append(batch_labels.long().cpu())
    if not feats:
        raise ValueError(f"{desc}: the data yielded no images")
    return ImageFeatures(
        features=torch.cat(feats),
        labels=torch.cat(labels) if len(labels) == len(feats) else None,
        flipped=torch.cat(flipped) if flip else None,
    )


@torch.no_grad()
def text_features(encode_text: TextEncoder, texts: Sequence[str], batch_size: int = 256,
                  desc: str = "text features") -> torch.Tensor:
    """Encode ``texts`` in batches -> ``(len(texts), D)`` float32 on CPU."""
    if len(texts) == 0:
        raise ValueError(f"{desc}: no texts to encode")
    out = [encode_text(list(texts[i : i + batch_size])).float().cpu()
           for i in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False)]
    return torch.cat(out)


FeatureKind = Literal["backbone", "embedding"]
"""``backbone``: the image tower's pooled output before the projection, un-normalised (what CLIP's linear probe
fits, its paper's appendix A.3); ``embedding``: the projected, L2-normalised joint-space embedding."""


class ImageTower(torch.nn.Module):
    """A UniCL model's image side as a module images -> features of one :data:`FeatureKind` (trainable, for
    fine-tuning it per few-shot episode; shares the model's parameters)."""

    def __init__(self, model: torch.nn.Module, features: FeatureKind = "embedding") -> None:
        super().__init__()
        if features not in ("backbone", "embedding"):
            raise ValueError(f"image features {features!r}: expected 'backbone' or 'embedding'")
        self.encoder = model.image_encoder
        self.projection = model.image_projection if features == "embedding" else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.encoder(images)
        return x if self.projection is None else torch.nn.functional.normalize(self.projection(x), dim=-1)


def image_encoder(model: torch.nn.Module, device: str | torch.device = "cpu",
                  features: FeatureKind = "embedding") -> ImageEncoder:
    """A UniCL model's image tower as an :data:`ImageEncoder` (eval mode); ``features`` picks which."""
    model.eval().to(device)
    tower = ImageTower(model, features)
    return lambda images: tower(images.to(device))


def text_encoder(model: torch.nn.Module, tokenizer: Callable[..., Any],
                 device: str | torch.device = "cpu") -> TextEncoder:
    """A UniCL model's text tower behind its tokenizer as a :data:`TextEncoder` (L2-normalised features)."""
    model.eval().to(device)

    def encode(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts)
        return model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device),
                                 normalize=True)

    return encode
