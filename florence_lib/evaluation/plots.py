"""Figures for notebooks 03-07 and 12: confusion matrices, C sweeps, accuracy against shots and chance, recall
curves, retrieval examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ..data.transforms import CLIP_MEAN, CLIP_STD


def _name(c: str | Sequence[str]) -> str:
    return c if isinstance(c, str) else c[0]


def confusion_plot(confusions: Mapping[str, torch.Tensor], classes: Mapping[str, Sequence[Any]]) -> Figure:
    """Row-normalised confusion matrices side by side; class names are shown where there are few."""
    fig, axes = plt.subplots(1, len(confusions), figsize=(4.5 * len(confusions), 4.2), squeeze=False)
    for ax, (name, cm) in zip(axes[0], confusions.items()):
        rates = cm.float() / cm.sum(1, keepdim=True).clamp(min=1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ax.set(title=name, xlabel="predicted", ylabel="true")
        if len(rates) <= 12:
            labels = [_name(c)[:14] for c in classes[name]]
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
    fig.tight_layout()
    return fig


def sweep_plot(sweeps: Mapping[str, Mapping[float, float]]) -> Figure:
    """Validation score against the inverse regularisation C of each linear-probe sweep."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, sweep in sweeps.items():
        cs = sorted(sweep)
        ax.plot(cs, [sweep[c] for c in cs], marker="o", ms=3, label=name)
    ax.set(xscale="log", xlabel="C (inverse L2 strength)", ylabel="validation score",
           title="linear-probe C sweep")
    ax.legend()
    fig.tight_layout()
    return fig


def shots_plot(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Few-shot accuracy (95% CI bars) against shots per class, one line per set, chance as dotted lines."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, name in enumerate(dict.fromkeys(r["dataset"] for r in records)):
        rows = [r for r in records if r["dataset"] == name and r.get("accuracy") is not None]
        if not rows:
            continue
        ways = sorted({r["n_way"] for r in rows})
        ax.errorbar([r["k_shot"] for r in rows], [100 * r["accuracy"] for r in rows],
                    yerr=[100 * r["ci95"] for r in rows], marker="o", capsize=3, color=f"C{i}",
                    label=f"{name} ({'/'.join(map(str, ways))}-way)")
        ax.axhline(100 / ways[0], color=f"C{i}", ls=":", lw=0.8)
    ax.set(xlabel="shots per class", ylabel="accuracy (%)", title="cross-domain few-shot (dotted: chance)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def display_image(t: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    return (t * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def retrieval_examples(dataset: Any, similarity: torch.Tensor, captions: Sequence[str],
                       image_to_captions: Sequence[Sequence[int]], n: int = 4, k: int = 3) -> Figure:
    """The first ``n`` images with their top-``k`` retrieved captions (a tick marks one of their own)."""
    n = min(n, similarity.shape[0])
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 4.6), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(display_image(dataset[i]))
        ax.axis("off")
        top = similarity[i].topk(min(k, similarity.shape[1])).indices.tolist()
        lines = [f"{'✓' if j in image_to_captions[i] else '✗'} {captions[j][:48]}" for j in top]
        ax.set_title("\n".join(lines), fontsize=7, loc="left")
    fig.tight_layout()
    return fig


def chance_plot(records: Sequence[Mapping[str, Any]], metric: str = "top1") -> Figure:
    """Accuracy of each (task, set) record beside its chance level (1 / classes), as paired bars."""
    rows = [r for r in records if r.get(metric) is not None and r.get("num_classes")]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(rows) + 2), 3.8))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [100 * r[metric] for r in rows], 0.4, label=metric)
    ax.bar(x + 0.2, [100 / r["num_classes"] for r in rows], 0.4, color="0.7", label="chance")
    ax.set_xticks(x, [f"{r['task']}\n{r['dataset']}" for r in rows], fontsize=7, rotation=30, ha="right")
    ax.set(ylabel="%", title="accuracy against chance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def recall_plot(records: Sequence[Mapping[str, Any]], prefixes: Sequence[str] = ("i2t", "t2i", "t2v")) -> Figure:
    """Recall@K curves (K = 1, 5, 10 where recorded) per retrieval record and direction."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for r in records:
        for p in prefixes:
            ks = [k for k in (1, 5, 10) if r.get(f"{p}_r{k}") is not None]
            if ks:
                ax.plot(ks, [100 * r[f"{p}_r{k}"] for k in ks], marker="o",
                        label=f"{r['task']} {r['dataset']} {p}")
    ax.set(xlabel="K", ylabel="recall@K (%)", xticks=[1, 5, 10], title="retrieval recall")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
