"""Action recognition (paper §3.8, Table 10): fine-tuning on the one engine, multi-view testing.

Training: cross-entropy with label smoothing on single jittered clips (stochastic depth and head dropout live
in the model). Testing: every clip is seen as temporal views x spatial crops (4 x 3 in the paper), and the
softmax probabilities of the views are averaged before top-1/top-5 are read off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.errors import collate_skip_none
from ..evaluation.metrics import classification_metrics
from ..runs import RunDir
from ..training.batches import step_loader
from ..training.checkpoint import latest_checkpoint
from ..training.engine import Engine
from ..training.optim import build_optimizer
from ..training.schedules import build_scheduler
from .config import VideoTrainConfig


class ActionObjective:
    """``objective(model, batch) -> (loss, logs)``: label-smoothed cross-entropy, logging the batch top-1."""

    def __init__(self, label_smoothing: float = 0.1) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["video"]).float()
        accuracy = (logits.argmax(1) == batch["label"]).float().mean().item()
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)
        return loss, {"train_top1": accuracy}


def _collate(samples: list[dict[str, Any] | None]) -> dict[str, Any]:
    return collate_skip_none(samples)


def train_recognizer(model: nn.Module, train_set: Dataset, cfg: VideoTrainConfig, *, device: torch.device,
                     seed: int, run_dir: RunDir | None = None, resume: bool = True,
                     spec: Mapping[str, Any] | None = None, config: Any = None,
                     task: str = "action_recognition") -> list[dict[str, Any]]:
    """Fine-tune ``model`` in place for ``cfg.steps`` steps; returns the logged records.

    With a ``run_dir``, checkpoints go to its ``checkpoints/`` (every ``cfg.checkpoint_every`` steps and at the
    end) and, with ``resume``, a run that finds one there continues from it (weights, optimizer, schedule, RNG
    and data position), so an interrupted run resumes where it stopped.
    """
    model.to(device)
    backbone_lr = {} if cfg.backbone_lr is None else {"backbone.": cfg.backbone_lr}
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, lr_by_prefix=backbone_lr)
    scheduler = build_scheduler(optimizer, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
    engine = Engine(model, ActionObjective(cfg.label_smoothing), optimizer, scheduler, device=device,
                    precision=cfg.precision, grad_clip=cfg.grad_clip or None)
    save: Callable[[], Any] | None = None
    if run_dir is not None:
        found = latest_checkpoint(run_dir.checkpoints) if resume else None
        if found is not None:
            from safetensors.torch import load_model

            load_model(model, str(found / "model.safetensors"), strict=True)
            engine.resume(found)

        if spec is None:
            spec = model.spec() if hasattr(model, "spec") else {"name": type(model).__name__}

        def save() -> Any:
            return engine.save(run_dir.checkpoints, model_spec=spec, config=config, keep=2)

    start = engine.step
    batches = step_loader(train_set, _collate, batch_size=cfg.batch_size, seed=seed, start_step=engine.step)
    records = engine.fit(batches, cfg.steps, run_dir=run_dir, log_every=cfg.log_every,
                         checkpoint_every=cfg.checkpoint_every, checkpoint=save, record={"task": task}, desc=task)
    if save is not None and engine.step > start:
        save()
    model.eval()
    return records


@torch.no_grad()
def multi_view_probabilities(model: nn.Module, views: torch.Tensor) -> torch.Tensor:
    """``views`` [B, V, C, T, H, W] -> class probabilities [B, K]: the mean over the V views of their softmax."""
    b, v = views.shape[:2]
    logits = model(views.flatten(0, 1)).float().view(b, v, -1)
    return logits.softmax(-1).mean(1)


@dataclass
class RecognitionResult:
    metrics: dict[str, float]
    probabilities: torch.Tensor  # [N, K], view-averaged
    labels: torch.Tensor  # [N]


@torch.no_grad()
def evaluate_recognizer(model: nn.Module, test_set: Dataset, *, batch_size: int = 8,
                        device: torch.device | str = "cpu", desc: str = "multi-view test") -> RecognitionResult:
    """Top-1/top-5 (and mean per-class recall) of view-averaged probabilities over ``test_set``'s view stacks."""
    model.to(device).eval()
    loader = DataLoader(test_set, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    probs, labels, views = [], [], 0
    for batch in tqdm(loader, desc=desc, leave=False):
        views = batch["video"].shape[1]
        probs.append(multi_view_probabilities(model, batch["video"].to(device)).cpu())
        labels.append(batch["label"])
    p, y = torch.cat(probs), torch.cat(labels)
    return RecognitionResult({**classification_metrics(p, y), "num_clips": len(y), "views": views}, p, y)
