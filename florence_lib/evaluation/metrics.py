"""Classification metrics shared by every protocol: top-k accuracy and mean per-class recall.

CLIP reports mean per-class recall instead of accuracy on the sets whose test split is unbalanced (Aircraft,
Pets, Caltech-101, Flowers); both are computed so the tables can pick what the paper picked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": ..., "top5": ...}``; k is capped at the number of classes (top-5 of 4 classes is top-4)."""
    labels = labels.to(logits.device)
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices  # (N, kmax)
    hit = pred == labels[:, None]
    return {f"top{k}": hit[:, : min(k, kmax)].any(dim=1).float().mean().item() for k in ks}


def mean_per_class_recall(pred: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """The mean over classes present in ``labels`` of the fraction of that class predicted correctly."""
    labels = labels.to(pred.device)
    n = int(num_classes if num_classes is not None else max(int(labels.max()), int(pred.max())) + 1)
    total = torch.bincount(labels, minlength=n).float()
    correct = torch.bincount(labels[pred == labels], minlength=n).float()
    present = total > 0
    return (correct[present] / total[present]).mean().item()


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor,
                           ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies plus mean per-class recall of the arg-max prediction."""
    out = topk_accuracy(logits, labels, ks)
    out["mean_per_class"] = mean_per_class_recall(logits.argmax(dim=1), labels, logits.shape[1])
    return out


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` counts, rows = true class, columns = predicted class."""
    idx = labels.long() * num_classes + pred.long().to(labels.device)
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
