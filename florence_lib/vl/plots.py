"""Figures of notebook 10: pretraining curves, VQA accuracy per question type, question/answer examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..data.transforms import CLIP_MEAN, CLIP_STD


def pretraining_curves(records: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """MLM and ITM accuracy on training batches and on held-out captions, against the step."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    for ax, key, chance in ((axes[0], "mlm_acc", None), (axes[1], "itm_acc", 0.5)):
        ax.plot([r["step"] for r in train], [r[key] for r in train], ".-", alpha=0.6, label="train batches")
        ax.plot([r["step"] for r in val], [r[f"val_{key}"] for r in val], "o-", label="held-out captions")
        if chance is not None:
            ax.axhline(chance, color="grey", ls="--", lw=1, label="chance")
        ax.set(xlabel="step", ylabel=key.replace("_", " "), ylim=(0, 1))
        ax.legend()
    axes[0].set_title("masked language modelling")
    axes[1].set_title("image-text matching")
    fig.tight_layout()
    return fig


def accuracy_by_type(record: Mapping[str, Any]) -> plt.Figure:
    """Bars per question type: the model, the question-only model and the majority answer."""
    types = [k.removeprefix("accuracy_") for k in record if k.startswith("accuracy_")]
    x = np.arange(len(types))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(types)), 3.5))
    for i, (prefix, name) in enumerate((("", "METER"), ("blind_", "question only"), ("majority_", "majority"))):
        ax.bar(x + (i - 1) * 0.27, [100 * record[f"{prefix}accuracy_{t}"] for t in types], 0.27, label=name)
    ax.set_xticks(x, types)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title=f"VQA on {record['dataset']} by question type")
    ax.legend()
    fig.tight_layout()
    return fig


def to_image(pixels: torch.Tensor) -> np.ndarray:
    """A CLIP-normalised [3, H, W] tensor back to an [H, W, 3] image in [0, 1]."""
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    return (pixels * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def examples(samples: Sequence[Mapping[str, Any]], predictions: Sequence[str], blind: Sequence[str] | None = None,
             n: int = 8) -> plt.Figure:
    """Image, question, METER's answer (and the blind model's), the ground truth; green where right."""
    n = min(n, len(samples))
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 3.2), squeeze=False)
    for ax, s, p, b in zip(axes[0], samples, predictions, blind or [None] * n, strict=False):
        ax.imshow(to_image(s["image"]))
        ax.axis("off")
        right = p == s["answers"][0]
        text = f"{s['question']}\npred: {p}" + (f" (blind: {b})" if b is not None else "") + f"\ntrue: {s['answers'][0]}"
        ax.set_title(text, fontsize=7, color="green" if right else "red", wrap=True)
    fig.tight_layout()
    return fig
