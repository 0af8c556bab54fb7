"""One checkpoint, every transfer protocol: the glue between models, evaluation sets and the protocols.

:class:`Evaluator` holds a UniCL model, its tokenizer and an :class:`EvalConfig`; each method runs one
protocol on one named set (see :mod:`.datasets`) and returns an :class:`Evaluation`: flat metrics records
(``{"task", "dataset", "model", ...}``, what the CLI writes and the tables read) and the arrays a notebook
plots. Image features are computed once per (set, split) and reused across protocols.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import load_config
from ..data.tokenizer import Tokenizer
from ..models import create_model
from ..runs import PROJECT_ROOT, RunDir, notebook_run_dir, seed_everything
from ..training.checkpoint import (
    checkpoint_image_size,
    latest_checkpoint,
    load_checkpoint,
    read_model_spec,
    resolve_checkpoint,
)
from ..training.engine import resolve_device
from .config import EvalConfig
from .datasets import (
    ClassificationSet,
    Split,
    classification_set,
    dataset_label,
    retrieval_set,
    retrieval_train_pairs,
)
from .features import (
    FeatureKind,
    ImageFeatures,
    ImageTower,
    image_encoder,
    image_features,
    text_encoder,
    text_features,
)
from .few_shot import FewShotResult, few_shot_episodes, few_shot_eval, finetune_episode
from .finetune import finetune, finetune_eval, finetune_pairs
from .linear_probe import linear_probe
from .metrics import classification_metrics, confusion_matrix
from .retrieval import retrieval_eval
from .zero_shot import zero_shot_classifier, zero_shot_logits

UNTRAINED_IMAGE_SIZE = 64  # an untrained preset has no resolution of its own: the world's default side


@dataclass
class Evaluation:
    records: list[dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)


def load_model(checkpoint: str | Path | None, model: str = "unicl_tiny", seed: int = 0,
               device: torch.device | str = "cpu") -> tuple[nn.Module, str, dict[str, Any]]:
    """(model, label, training config): from a checkpoint, or a freshly initialised ``model`` preset."""
    if checkpoint is None:
        seed_everything(seed)
        return create_model(model).to(device).eval(), f"{model} (untrained)", {}
    net, train_cfg = load_checkpoint(checkpoint, device)
    ckpt = resolve_checkpoint(checkpoint)
    return net, f"{read_model_spec(ckpt)['name']} ({ckpt.parent.parent.name}/{ckpt.name})", train_cfg


class Evaluator:
    def __init__(self, model: nn.Module, cfg: EvalConfig, label: str = "model", world_seed: int = 0,
                 cache_dir: str | Path | None = None, run_dir: RunDir | None = None) -> None:
        if cfg.image_size is None:  # as the checkpoint was trained last
            trained = checkpoint_image_size(resolve_checkpoint(cfg.checkpoint)) if cfg.checkpoint else None
            cfg = dataclasses.replace(cfg, image_size=trained or UNTRAINED_IMAGE_SIZE)
        self.model, self.cfg, self.label, self.world_seed = model, cfg, label, world_seed
        self.run_dir = run_dir
        self.device = resolve_device(cfg.device)
        self.model.to(self.device).eval()
        self.tokenizer = Tokenizer()
        self.cache_dir = Path(cache_dir) if cache_dir is not None and cfg.cache_classifiers else None
        self._features: dict[tuple[str, str, bool, str, int | None], tuple[ClassificationSet, ImageFeatures]] = {}

    @classmethod
    def from_config(cls, cfg: EvalConfig, run_dir: RunDir | None = None) -> Evaluator:
        """The checkpoint (or untrained preset) of ``cfg``; classifiers are cached and fine-tuning curves
        logged under ``run_dir`` when given."""
        device = resolve_device(cfg.device)
        model, label, train_cfg = load_model(cfg.checkpoint, cfg.model, cfg.seed, device)
        cache = run_dir.path / "cache" if run_dir is not None else None
        return cls(model, cfg, label, train_cfg.get("data", {}).get("world_seed", 0), cache, run_dir)

    # ------------------------------------------------------------------------------------------- helpers
    def _record(self, task: str, dataset: str, **metrics: Any) -> dict[str, Any]:
        label = dataset_label(dataset)
        where = {"dataset_path": str(Path(dataset).resolve())} if label != dataset else {}
        return {"task": task, "dataset": label, **where, "model": self.label, "checkpoint": self.cfg.checkpoint,
                "image_size": self.cfg.image_size, **metrics}

    def classification_set(self, name: str, split: Split, max_images: int | None = None) -> ClassificationSet:
        c = self.cfg
        return classification_set(name, split, data_root=c.data_root, image_size=c.image_size,
                                  max_images=max_images or c.max_images, test_fraction=c.test_fraction,
                                  world_seed=self.world_seed, seed=c.seed)

    def features(self, name: str, split: Split, flip: bool = False, kind: FeatureKind = "embedding",
                 max_images: int | None = None) -> tuple[ClassificationSet, ImageFeatures]:
        """The set and its frozen image features of ``kind`` (and their mirrored twins with ``flip``),
        computed once; ``max_images`` overrides the config's cap."""
        key = (name, split, flip, kind, max_images)
        if key not in self._features:
            data = self.classification_set(name, split, max_images)
            feats = image_features(image_encoder(self.model, self.device, kind), data.dataset,
                                   self.cfg.batch_size, self.device, flip=flip,
                                   desc=f"{name} {split} features")
            if feats.labels is None or not np.array_equal(feats.labels.numpy(), data.targets):
                raise RuntimeError(f"{name} {split}: images failed to load; features and labels disagree")
            self._features[key] = (data, feats)
        return self._features[key]

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return text_encoder(self.model, self.tokenizer, self.device)(texts)

    def _train_options(self, log_name: str) -> dict[str, Any]:
        ft = self.cfg.finetune
        return {"steps": ft.steps, "batch_size": ft.batch_size, "lr": ft.lr, "weight_decay": ft.weight_decay,
                "warmup_steps": ft.warmup_steps, "device": self.device, "precision": ft.precision,
                "seed": self.cfg.seed, "run_dir": self.run_dir.sub(log_name) if self.run_dir else None}

    # ------------------------------------------------------------------------------------------- protocols
    def zero_shot(self, name: str) -> Evaluation:
        """Table 1: prompt-ensemble zero-shot classification on the test split."""
        data, feats = self.features(name, "test")
        classifier = zero_shot_classifier(self.encode_text, data.classes, data.templates,
                                          cache_dir=self.cache_dir,
                                          model_key=f"{self.label}|{self.cfg.checkpoint}")
        logits = zero_shot_logits(feats.features, classifier)
        metrics = classification_metrics(logits, feats.labels)
        record = self._record("zero_shot", name, **metrics, num_images=len(feats.labels),
                              num_classes=len(data.classes), num_templates=len(data.templates))
        confusion = confusion_matrix(logits.argmax(1), feats.labels, len(data.classes))
        return Evaluation([record], {"logits": logits, "labels": feats.labels, "classes": data.classes,
                                     "confusion": confusion})

    def linear_probe(self, name: str) -> Evaluation:
        """Table 2: CLIP's logistic-regression probe on frozen features, C swept on a split of train."""
        lp = self.cfg.linear_probe
        _, train = self.features(name, "train", kind=lp.features, max_images=lp.max_train_images)
        data, test = self.features(name, "test", kind=lp.features)
        res = linear_probe(train.features, train.labels, test.features, test.labels,
                           val_fraction=lp.val_fraction, selection=lp.selection,
                           steps_per_decade=lp.steps_per_decade, max_iter=lp.max_iter, seed=self.cfg.seed)
        record = self._record("linear_probe", name, **res.metrics, num_train=len(train.labels),
                              num_test=len(test.labels), num_classes=len(data.classes),
                              not_converged=res.not_converged, features=lp.features)
        return Evaluation([record], {"sweep": res.sweep, "logits": res.test_logits, "labels": test.labels,
                                     "classes": data.classes})

    def few_shot(self, name: str) -> Evaluation:
        """Table 4: CD-FSL episodes per shot count; ways shrink (recorded) where a set is too small. With
        ``few_shot.finetune_backbone`` the image tower is fine-tuned per episode (Florence's variant), for the shot
        counts of ``few_shot.finetune_shots`` (all by default)."""
        fs = self.cfg.few_shot
        data, feats = self.features(name, "all", flip=fs.flip, kind=fs.features)
        labels = feats.labels.numpy()
        records, accuracies = [], {}
        head = {"epochs": fs.epochs, "batch_size": fs.batch_size, "lr": fs.lr, "momentum": fs.momentum,
                "dampening": fs.dampening, "weight_decay": fs.weight_decay}
        for k in fs.shots:
            tuned = fs.finetune_backbone and (fs.finetune_shots is None or k in fs.finetune_shots)
            epochs = (fs.finetune_epochs or fs.epochs) if tuned else fs.epochs
            protocol = {**head, "epochs": epochs, "features": fs.features, "finetune_backbone": tuned}
            counts = np.bincount(labels)
            n_way = min(fs.n_way, int((counts >= k + fs.n_query).sum()))
            if n_way < 2:
                records.append(self._record("few_shot", name, k_shot=k, n_way=n_way, n_query=fs.n_query,
                                            accuracy=None, ci95=None, episodes=0, **protocol,
                                            skipped=f"fewer than 2 classes have {k + fs.n_query} images"))
                continue
            if tuned:
                res = self._few_shot_finetuned(data, labels, n_way, k, {**head, "epochs": epochs})
            else:
                res = few_shot_eval(feats.features, labels, flipped=feats.flipped, n_way=n_way, k_shot=k,
                                    n_query=fs.n_query, episodes=fs.episodes, seed=self.cfg.seed,
                                    dropout=fs.dropout, **head)
            records.append(self._record("few_shot", name, **res.metrics(), **protocol))
            accuracies[k] = res.episode_accuracies
        return Evaluation(records, {"episode_accuracies": accuracies})

    def _few_shot_finetuned(self, data: ClassificationSet, labels: np.ndarray, n_way: int, k_shot: int,
                            head: dict[str, Any]) -> FewShotResult:
        fs = self.cfg.few_shot
        episodes = min(fs.episodes, fs.max_finetune_episodes or fs.episodes)
        eps = few_shot_episodes(labels, n_way, k_shot, fs.n_query, episodes, self.cfg.seed)
        tower = ImageTower(self.model, fs.features)
        gen = torch.Generator().manual_seed(self.cfg.seed)

        def images(indices: np.ndarray) -> torch.Tensor:
            return torch.stack([data.dataset[int(i)][0] for i in indices]).to(self.device)

        accs = [finetune_episode(tower, images(ep.support), torch.from_numpy(ep.support_labels).to(self.device),
                                 images(ep.query), torch.from_numpy(ep.query_labels).to(self.device), n_way,
                                 backbone_lr=fs.backbone_lr, generator=gen, **head)
                for ep in tqdm(eps, desc=f"{data.name} fine-tuned episodes", leave=False)]
        return FewShotResult.from_accuracies(np.asarray(accs), n_way, k_shot, fs.n_query)

    def retrieval(self, name: str, model: nn.Module | None = None, task: str = "retrieval",
                  split: Split = "all") -> Evaluation:
        """Table 5 (zero-shot): image->text and text->image recall@K with every caption of every image.
        ``split`` matters for a user's set only (all its images, or the held-out share)."""
        c, rc = self.cfg, self.cfg.retrieval
        model = model if model is not None else self.model
        data = retrieval_set(name, data_root=c.data_root, image_size=c.image_size, max_images=c.max_images,
                             captions_per_image=rc.captions_per_image, world_seed=self.world_seed,
                             images=c.images, split=split, test_fraction=c.test_fraction, seed=c.seed)
        img = image_features(image_encoder(model, self.device), data.dataset, c.batch_size, self.device,
                             desc=f"{name} images").features
        if len(img) != len(data.image_to_captions):
            raise RuntimeError(f"{name}: {len(data.image_to_captions) - len(img)} images failed to load")
        txt = text_features(text_encoder(model, self.tokenizer, self.device), data.captions,
                            desc=f"{name} captions")
        metrics = retrieval_eval(img, txt, data.image_to_captions, rc.ks, rc.max_exact)
        record = self._record(task, name, **metrics, num_images=len(img), num_captions=len(txt))
        return Evaluation([record], {"similarity": img @ txt.T, "captions": data.captions, "image_features": img,
                                     "image_to_captions": data.image_to_captions, "dataset": data.dataset})

    def finetune_retrieval(self, name: str) -> Evaluation:
        """Table 5 (fine-tuned), paper §3.5: continue UniCL training of both towers on the set's training
        image-text pairs (a copy of the model), then the same recall@K on its test images."""
        c = self.cfg
        pairs = retrieval_train_pairs(name, data_root=c.data_root, image_size=c.image_size,
                                      max_images=c.max_images, world_seed=self.world_seed, images=c.images,
                                      test_fraction=c.test_fraction, seed=c.seed)
        net = finetune_pairs(copy.deepcopy(self.model), pairs, self.tokenizer,
                             **self._train_options(f"finetune_retrieval_{dataset_label(name)}"))
        result = self.retrieval(name, net, task="retrieval_finetuned", split="test")
        result.records[0].update(steps=c.finetune.steps, num_train_pairs=len(pairs))
        return result

    def finetune(self, name: str) -> Evaluation:
        """Table 3: fine-tune a copy of the model on the train split, score on the test split; the frozen
        model's zero-shot score on the same split is recorded beside it."""
        ft = self.cfg.finetune
        train = self.classification_set(name, "train")
        test = self.classification_set(name, "test")
        net = finetune(copy.deepcopy(self.model), train.dataset, train.classes, train.templates,
                       self.tokenizer, mode=ft.mode, **self._train_options(f"finetune_{ft.mode}_{dataset_label(name)}"))
        metrics = finetune_eval(net, test.dataset, test.classes, test.templates, self.tokenizer,
                                batch_size=self.cfg.batch_size, device=self.device)
        before = self.zero_shot(name).records[0]
        record = self._record(f"finetune_{ft.mode}", name, **metrics, steps=ft.steps, lr=ft.lr,
                              zero_shot_top1=before["top1"], num_train=len(train.targets),
                              num_test=len(test.targets))
        return Evaluation([record], {"model": net})


def pretraining_checkpoint(run_dir: str | Path | None) -> Path | None:
    """The checkpoint notebook 02 left in the series run directory (None: ``runs/interactive``), if any."""
    base = Path(run_dir) if run_dir is not None else PROJECT_ROOT / "runs" / "interactive"
    return latest_checkpoint(base / "02_unicl_pretraining")


def notebook_real_sets(names: Sequence[str], root: str | Path | None, profile: str,
                       data_root: str | Path | None) -> list[str]:
    """The real sets a notebook evaluates: ``names`` when real data was found (``root``, from
    :func:`~florence_lib.runs.data_root_or_none`), except that the smoke profile (seconds: what nbval runs) keeps
    to the embedded world unless ``data_root`` was passed explicitly."""
    if root is None or (profile == "smoke" and data_root is None):
        return []
    return list(names)


def notebook_evaluator(notebook: str, *, profile: str, run_dir: str | Path | None,
                       data_root: str | Path | None, checkpoint: str | Path | None, seed: int,
                       overrides: Sequence[str] = ()) -> tuple[Evaluator, RunDir]:
    """What notebooks 03-07 start with: the profile's EvalConfig, the checkpoint (given, else notebook 02's,
    else an untrained model, labelled so), and the notebook's output directory."""
    out = notebook_run_dir(run_dir, notebook)
    ckpt = checkpoint if checkpoint is not None else pretraining_checkpoint(run_dir)
    cfg = load_config(EvalConfig, command="evaluate", profile=profile, overrides=[f"seed={seed}", *overrides])
    cfg.checkpoint = str(ckpt) if ckpt is not None else None
    cfg.data_root = str(data_root) if data_root is not None else None
    out.start(cfg, seed=seed)
    return Evaluator.from_config(cfg, out), out
