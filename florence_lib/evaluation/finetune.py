"""Fine-tuning for classification (paper §3.3, Table 3), on the one training engine.

``mode="unicl"`` is the paper's recipe: nothing is added to the model; training continues with the UniCL
pretraining loss, where each image's text is its class name in a randomly drawn prompt template, so images of
one class are all positives of each other. It is evaluated like zero-shot, with the fine-tuned towers.
``mode="linear"`` is the usual comparison: a new linear head on the image embedding, the whole image tower
fine-tuned with cross-entropy. Both use AdamW and the cosine schedule with linear warmup (the paper: 500
warmup steps, peak lr 2e-5, batch 8,192, 10 epochs at 512px).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, default_collate

from ..runs import RunDir
from ..training.batches import PairCollate, step_loader
from ..training.engine import Engine, Objective
from ..training.objectives import ContrastiveObjective
from ..training.optim import build_optimizer
from ..training.schedules import build_scheduler
from .features import image_encoder, image_features, text_encoder
from .metrics import classification_metrics
from .zero_shot import ClassNames, zero_shot_classifier, zero_shot_eval

Mode = Literal["unicl", "linear"]


class PromptedLabels(Dataset):
    """``(image, label)`` -> ``{"image", "text", "label"}`` with the class name in a random template.

    The template is drawn from torch's global RNG, which :func:`step_loader` seeds per sample, so a run is
    reproducible; a class given as synonyms uses its first name.
    """

    def __init__(self, dataset: Dataset, classnames: ClassNames, templates: Sequence[str]) -> None:
        self.dataset, self.templates = dataset, list(templates)
        self.names = [c if isinstance(c, str) else c[0] for c in classnames]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.dataset[index]
        template = self.templates[int(torch.randint(len(self.templates), ()))]
        return {"image": image, "text": template.format(self.names[int(label)]), "label": int(label)}


class LinearHeadClassifier(nn.Module):
    """A UniCL image tower with a new linear classification head on its (unnormalised) embedding."""

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = model
        self.head = nn.Linear(model.config.embed_dim, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.encode_image(images, normalize=False))

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()}


def cross_entropy_objective(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """The engine objective of the linear-head fine-tune: cross-entropy, logging the batch's accuracy."""
    logits = model(batch["image"]).float()
    accuracy = (logits.argmax(1) == batch["label"]).float().mean().item()
    return F.cross_entropy(logits, batch["label"]), {"train_top1": accuracy}


def _train(net: nn.Module, samples: Dataset, objective: Objective, collate: Callable, *, steps: int,
           batch_size: int, lr: float, weight_decay: float, warmup_steps: int, device: torch.device | str,
           precision: str, seed: int, run_dir: RunDir | None, task: str) -> nn.Module:
    if warmup_steps >= steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must be below steps ({steps})")
    device = torch.device(device)
    net.to(device)
    optimizer = build_optimizer(net, lr=lr, weight_decay=weight_decay)
    scheduler = build_scheduler(optimizer, warmup_steps=warmup_steps, total_steps=steps)
    engine = Engine(net, objective, optimizer, scheduler, device=device, precision=precision)
    batches = step_loader(samples, collate, batch_size=batch_size, seed=seed)
    engine.fit(batches, steps, run_dir=run_dir, record={"task": task}, desc=task)
    return net.eval()


def finetune_pairs(model: nn.Module, pairs: Dataset,
                   tokenizer: Callable[[list[str]], dict[str, torch.Tensor]], **train: Any) -> nn.Module:
    """Continue UniCL training on ``pairs`` of ``{"image", "text", "label"}`` (retrieval fine-tuning, §3.5:
    both towers train on the target set's image-text pairs; a label per image makes its captions positives).
    ``train``: steps, batch_size, lr, weight_decay, warmup_steps, device, precision, seed, run_dir."""
    return _train(model, pairs, ContrastiveObjective("unicl"), PairCollate(tokenizer), task="finetune_pairs",
                  **train)


def finetune(model: nn.Module, train_set: Dataset, classnames: ClassNames, templates: Sequence[str],
             tokenizer: Callable[[list[str]], dict[str, torch.Tensor]], *, mode: Mode = "unicl",
             **train: Any) -> nn.Module:
    """Fine-tune ``model`` (in place) on ``train_set`` of ``(image, label)``; returns the trained module: the
    UniCL model itself (``unicl``) or a :class:`LinearHeadClassifier` around it (``linear``). ``train`` as in
    :func:`finetune_pairs`."""
    prompted = PromptedLabels(train_set, classnames, templates)
    if mode == "unicl":
        return _train(model, prompted, ContrastiveObjective("unicl"), PairCollate(tokenizer),
                      task="finetune_unicl", **train)
    if mode == "linear":
        return _train(LinearHeadClassifier(model, len(classnames)), prompted, cross_entropy_objective,
                      default_collate, task="finetune_linear", **train)
    raise ValueError(f"mode: {mode!r} is not one of 'unicl', 'linear'")


@torch.no_grad()
def finetune_eval(net: nn.Module, test_set: Dataset, classnames: ClassNames, templates: Sequence[str],
                  tokenizer: Callable[[list[str]], dict[str, torch.Tensor]], *, batch_size: int = 64,
                  device: torch.device | str = "cpu") -> dict[str, float]:
    """Top-1/top-5/mean-per-class on ``test_set``: prompt classifier (UniCL model) or the linear head."""
    if isinstance(net, LinearHeadClassifier):
        net.to(device).eval()
        logits = image_features(net, test_set, batch_size, device, desc="fine-tuned logits")
        return classification_metrics(logits.features, logits.labels)
    feats = image_features(image_encoder(net, device), test_set, batch_size, device)
    classifier = zero_shot_classifier(text_encoder(net, tokenizer, device), classnames, templates)
    return zero_shot_eval(feats.features, feats.labels, classifier)
