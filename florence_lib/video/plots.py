"""Figures for notebook 11: clip strips with predicted actions, training curves, retrieved clips."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..data.transforms import CLIP_MEAN, CLIP_STD


def _frames(video: torch.Tensor) -> np.ndarray:
    """Normalised [C, T, H, W] -> displayable [T, H, W, 3] in [0, 1]."""
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None, None], torch.tensor(CLIP_STD)[:, None, None, None]
    return (video * std + mean).clamp(0, 1).permute(1, 2, 3, 0).numpy()


def clip_strips(clips: Sequence[torch.Tensor], titles: Sequence[str], max_frames: int = 8) -> Figure:
    """One row of frames per clip ([C, T, H, W], normalised), titled on the left."""
    n, t = len(clips), min(max_frames, clips[0].shape[1])
    fig, axes = plt.subplots(n, t, figsize=(1.1 * t + 2.6, 1.15 * n), squeeze=False)
    for row, (clip, title) in enumerate(zip(clips, titles, strict=True)):
        frames = _frames(clip)
        picks = np.linspace(0, frames.shape[0] - 1, t).round().astype(int)
        for col, k in enumerate(picks):
            axes[row, col].imshow(frames[k])
            axes[row, col].axis("off")
        axes[row, 0].text(-0.15, 0.5, title, transform=axes[row, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=0.3, wspace=0.05, hspace=0.1)
    return fig


def prediction_strips(dataset: Any, probabilities: torch.Tensor, classes: Sequence[str], n: int = 6) -> Figure:
    """The first ``n`` test clips (their first view) with the true and the predicted action."""
    clips, titles = [], []
    for i in range(n):
        item = dataset[i]
        pred = int(probabilities[i].argmax())
        mark = "✓" if pred == item["label"] else "✗"
        clips.append(item["video"][0])
        titles.append(f"{mark} pred: {classes[pred]} ({probabilities[i, pred]:.2f})\ntrue: {classes[item['label']]}")
    return clip_strips(clips, titles)


def curves_plot(curves: Mapping[str, Sequence[Mapping[str, Any]]], chance: float) -> Figure:
    """Training loss and batch top-1 against step, one line per run (e.g. inflated vs scratch)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, records in curves.items():
        steps = [r["step"] for r in records]
        ax_loss.plot(steps, [r["loss"] for r in records], label=name)
        ax_acc.plot(steps, [r["train_top1"] for r in records], label=name)
    ax_acc.axhline(chance, ls=":", c="grey", label="chance")
    ax_loss.set(xlabel="step", ylabel="training loss")
    ax_acc.set(xlabel="step", ylabel="batch top-1 (train clips)")
    ax_acc.legend()
    fig.tight_layout()
    return fig


def retrieved_clips(dataset: Any, similarity: torch.Tensor, captions: Sequence[str], queries: Sequence[int],
                    top: int = 3) -> Figure:
    """For each query caption, its top clips (middle frame), the correct one ticked."""
    fig, axes = plt.subplots(len(queries), top, figsize=(2.0 * top + 2.8, 1.9 * len(queries)), squeeze=False)
    for row, q in enumerate(queries):
        best = torch.sort(similarity[:, q], descending=True, stable=True).indices[:top]
        for col, clip in enumerate(best.tolist()):
            frames = _frames(dataset[clip]["video"][0])
            axes[row, col].imshow(frames[len(frames) // 2])
            axes[row, col].set_title(("✓ " if clip == q else "") + f"clip {clip}", fontsize=7)
            axes[row, col].axis("off")
        axes[row, 0].text(-0.1, 0.5, captions[q], transform=axes[row, 0].transAxes, ha="right", va="center",
                          fontsize=7, wrap=True)
    fig.subplots_adjust(left=0.35)
    return fig
