"""Figures of the detection notebooks: detections drawn on images, training curves, per-class AP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle


def draw_detections(ax: Any, image: torch.Tensor, detections: Mapping[str, torch.Tensor],
                    categories: Sequence[str], target: Mapping[str, torch.Tensor] | None = None,
                    min_score: float = 0.3, max_boxes: int = 10) -> None:
    """uint8 ``image [3, H, W]`` with ground truth (dashed white) and detections above ``min_score``."""
    ax.imshow(image.permute(1, 2, 0).numpy())
    if target is not None:
        for box in target["boxes"].tolist():
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="white", ls="--",
                                   lw=1))
    keep = detections["scores"] >= min_score
    for box, score, label in list(zip(detections["boxes"][keep].tolist(), detections["scores"][keep].tolist(),
                                      detections["labels"][keep].tolist(), strict=True))[:max_boxes]:
        ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="red", lw=1.5))
        ax.text(box[0], box[1] - 1, f"{categories[label]} {score:.2f}", color="yellow", fontsize=7,
                va="bottom", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0})
    ax.set_axis_off()


def detection_gallery(images: Sequence[torch.Tensor], detections: Sequence[Mapping[str, torch.Tensor]],
                      categories: Sequence[str], targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
                      min_score: float = 0.3, title: str = "") -> plt.Figure:
    fig, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 2.9), squeeze=False)
    for i, ax in enumerate(axes[0]):
        draw_detections(ax, images[i], detections[i], categories, targets[i] if targets else None, min_score)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(records: Sequence[Mapping[str, Any]], title: str = "detection training") -> plt.Figure:
    """Loss parts per step (train records) and AP50 on the val split (val records), when logged."""
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(11 if val else 6, 3.6), squeeze=False)
    ax = axes[0, 0]
    for key in ("loss", "loss_cls", "loss_box", "loss_centerness"):
        ax.plot([r["step"] for r in train], [r[key] for r in train], label=key)
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    if val:
        axes[0, 1].plot([r["step"] for r in val], [r["AP50"] for r in val], marker="o", label="AP50")
        axes[0, 1].plot([r["step"] for r in val], [r["AP"] for r in val], marker="o", label="AP")
        axes[0, 1].set(xlabel="step", ylabel="val", title="COCO-style AP on val scenes")
        axes[0, 1].legend()
    fig.tight_layout()
    return fig


def per_class_bars(per_class: Mapping[str, float | None], title: str = "per-class AP") -> plt.Figure:
    names = list(per_class)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names)), 3.2))
    ax.bar(names, [per_class[n] or 0.0 for n in names])
    ax.set(ylabel="AP", ylim=(0, 1), title=title)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig
