"""Validation during pretraining: zero-shot accuracy, retrieval R@1 and a text-collapse detector on the world.

Minimal and exact (whole similarity matrices, no approximate search); ``florence_lib.evaluation`` holds the full
protocols (prompt-ensemble caches, top-5, mean per-class recall, R@5/10).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.world import World, WorldClassification, WorldRetrieval
from .batches import trim_padding

Tokenizer = Callable[[list[str]], dict[str, torch.Tensor]]


def _images(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch of images alone, ``(images, labels)`` or ``{"image", "label"}``."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, dict):
        return batch["image"], batch.get("label")
    return batch[0], batch[1] if len(batch) > 1 else None


@torch.no_grad()
def encode_images(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 128,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """L2-normalised image features ``(N, D)`` in dataset order, and the labels when the dataset has them."""
    feats, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images, lab = _images(batch)
        feats.append(model.encode_image(images.to(device), normalize=True).float().cpu())
        if isinstance(lab, torch.Tensor):
            labels.append(lab)
    return torch.cat(feats), (torch.cat(labels) if len(labels) == len(feats) else None)


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text features ``(len(texts), D)``."""
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = trim_padding(tokenizer(list(texts[i : i + batch_size])))
        out.append(model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device),
                                     normalize=True).float().cpu())
    return torch.cat(out)


def zero_shot_accuracy(image_features: torch.Tensor, labels: torch.Tensor, prompt_features: torch.Tensor) -> float:
    """Top-1 accuracy of the prompt-ensemble classifier.

    ``prompt_features`` is ``(C, T, D)``: class ``c`` under template ``t``; each class's column is the normalised
    mean of its normalised prompt features (CLIP's ensemble).
    """
    classifier = F.normalize(F.normalize(prompt_features, dim=-1).mean(dim=1), dim=-1)  # (C, D)
    pred = (image_features @ classifier.T).argmax(dim=1)
    return (pred == labels).float().mean().item()


def mean_pairwise_cosine(features: torch.Tensor) -> float:
    """Mean cosine similarity over distinct pairs of rows: the collapse detector. Near 1, every class prompt
    embeds to one vector (a collapsed text tower: an lr 1e-3 run reached 0.9998 by step 50); a working tower
    keeps it well below its init value."""
    f = F.normalize(features.float(), dim=-1)
    n = len(f)
    return ((f @ f.T).sum() - n).item() / (n * (n - 1))


def recall_at_1(image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor,
                ) -> dict[str, float]:
    """Image->text and text->image R@1; ``text_image[j]`` is the index of the image that caption ``j`` describes.

    An image query is a hit when its nearest caption is any of its own captions.
    """
    sim = image_features @ text_features.T  # (N_images, N_texts)
    i2t = (text_image[sim.argmax(dim=1)] == torch.arange(len(image_features))).float().mean().item()
    t2i = (sim.argmax(dim=0) == text_image).float().mean().item()
    return {"i2t_r1": i2t, "t2i_r1": t2i}


class PretrainValidator:
    """Zero-shot top-1 on the world's held-out classes and on all its classes, caption retrieval R@1 on its val
    split, and the collapse detector.

    ``zero_shot_top1`` is scored among the held-out classes only (chance = 1 / their number): no image or text of
    those colour-shape combinations is seen in training. ``zero_shot_top1_all`` is the 64-way task of notebook 03
    on the test split (chance 1/64). Retrieval pairs each val image with its longest caption (nearly unique, as
    in COCO), so chance is 1 / ``size``. ``class_prompt_cosine`` is the mean pairwise cosine of the prompt-ensemble
    embeddings of all classes (see :func:`mean_pairwise_cosine`).
    """

    def __init__(self, world: World, tokenizer: Tokenizer, device: torch.device, size: int) -> None:
        self.tokenizer, self.device = tokenizer, device
        self.classification = WorldClassification(world, "heldout", size)
        self.all_classes = WorldClassification(world, "test", size)
        present = sorted(set(self.classification.targets))
        self.heldout = torch.tensor(present)
        remap = {c: i for i, c in enumerate(present)}
        self.labels = torch.tensor([remap[t] for t in self.classification.targets])
        self.retrieval = WorldRetrieval(world, "val", size, captions_per_image=1)
        self.captions = [caps[0] for caps in self.retrieval.captions]

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        templates, classes = self.classification.templates, self.classification.classes
        prompts = [t.replace("{}", c) for c in classes for t in templates]
        prompt_feats = encode_texts(model, self.tokenizer, prompts, self.device).view(len(classes), len(templates), -1)
        images, _ = encode_images(model, self.classification, self.device)
        out = {"zero_shot_top1": zero_shot_accuracy(images, self.labels, prompt_feats[self.heldout])}
        images, _ = encode_images(model, self.all_classes, self.device)
        out["zero_shot_top1_all"] = zero_shot_accuracy(images, torch.tensor(self.all_classes.targets), prompt_feats)
        images, _ = encode_images(model, self.retrieval, self.device)
        texts = encode_texts(model, self.tokenizer, self.captions, self.device)
        out.update(recall_at_1(images, texts, torch.arange(len(self.captions))))
        out["class_prompt_cosine"] = mean_pairwise_cosine(F.normalize(prompt_feats, dim=-1).mean(dim=1))
        return out
