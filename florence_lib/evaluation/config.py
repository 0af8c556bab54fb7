"""EvalConfig: everything ``python -m florence_lib evaluate <protocol>`` and notebooks 03-07 need.

The defaults follow the paper and its references (CLIP's linear-probe sweep, CD-FSL's 600 episodes of 15
queries, 5 captions per image); ``florence_lib/configs/evaluate/{smoke,quick,paper}.yaml`` shrink or keep
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import ConfigError, field


@dataclass
class LinearProbeConfig:
    """CLIP's protocol: L-BFGS logistic regression, C swept on a validation split, refit on train + val."""

    val_fraction: float = field(0.2, min=0.01, max=0.9, help="share of train held out for the C sweep")
    max_train_images: int | None = field(None, min=1, help="cap on the probe's training images (null: "
                                                         "max_images); CLIP's probe trains on the whole train split")
    steps_per_decade: int = field(8, min=1, max=64, help="resolution at which the search over log10(C) stops")
    max_iter: int = field(1000, min=1, help="L-BFGS iterations per fit")
    selection: Literal["top1", "mean_per_class"] = field("top1", help="validation metric that picks C")
    features: Literal["backbone", "embedding"] = field(
        "backbone", help="backbone: the image tower's pooled features before the projection, un-normalised "
                         "(CLIP's protocol); embedding: the projected, L2-normalised joint-space embedding")


@dataclass
class FewShotConfig:
    """CD-FSL (Guo et al. 2020): n-way k-shot episodes, 15 queries per class, a fresh linear head per episode.

    The head's defaults are the benchmark's reference fine-tune (its ``finetune.py``): SGD lr 0.01, momentum 0.9,
    dampening 0.9, weight decay 1e-3, batch 4, 100 epochs, no augmentation, no dropout. ``finetune_backbone`` is
    Florence's variant (paper §3.4): the image tower is fine-tuned with the head in every episode, by plain SGD
    at ``backbone_lr`` (the reference's optimiser for the backbone), on a fresh copy per episode. Assumption
    where the paper is silent: the tower stays in eval mode (no stochastic depth) while it is fine-tuned.
    """

    n_way: int = field(5, min=2, help="classes per episode (fewer where a set has fewer eligible classes)")
    shots: list[int] = field(default_factory=lambda: [5, 20, 50], min=1, help="support images per class")
    n_query: int = field(15, min=1, help="query images per class")
    episodes: int = field(600, min=1)
    epochs: int = field(100, min=1, help="passes over the support set per episode (CD-FSL: 100)")
    batch_size: int = field(4, min=1, help="support images per SGD step (CD-FSL: 4)")
    lr: float = field(0.01, min=0.0, help="head SGD lr (CD-FSL: 0.01)")
    momentum: float = field(0.9, min=0.0, max=0.999999, help="head SGD momentum (CD-FSL: 0.9)")
    dampening: float = field(0.9, min=0.0, max=0.999999, help="head SGD dampening (CD-FSL: 0.9)")
    weight_decay: float = field(1e-3, min=0.0, max=1.0, help="head SGD weight decay (CD-FSL: 1e-3)")
    dropout: float = field(0.0, min=0.0, max=0.99, help="dropout before the head (CD-FSL: none)")
    flip: bool = field(False, help="horizontal flips at training and test time (CD-FSL: none)")
    features: Literal["backbone", "embedding"] = field(
        "backbone", help="what the head sees: the image tower's un-normalised features (as CD-FSL's ResNet "
                         "features), or the projected unit-norm embedding (too small for the reference lr)")
    finetune_backbone: bool = field(False, help="Florence: fine-tune the image tower per episode (expensive)")
    backbone_lr: float = field(0.01, min=0.0, help="plain-SGD lr of the image tower when it is fine-tuned")
    max_finetune_episodes: int | None = field(
        None, min=1, help="cap on episodes per shot when finetune_backbone (each trains a tower copy)")
    finetune_shots: list[int] | None = field(
        None, min=1, help="shot counts that fine-tune the tower when finetune_backbone (null: every one); the "
                          "others train the head on frozen features, and each record says which it got")
    finetune_epochs: int | None = field(
        None, min=1, help="passes over the support set per fine-tuned episode (null: epochs)")


@dataclass
class RetrievalConfig:
    captions_per_image: int = field(5, min=1, max=6, help="world captions per image (COCO has its own)")
    ks: list[int] = field(default_factory=lambda: [1, 5, 10], min=1, help="recall cut-offs")
    max_exact: int = field(50_000_000, min=0, help="images x texts above which faiss top-K search is used")


@dataclass
class FinetuneConfig:
    """Paper §3.3: continue the UniCL loss with prompted class names (``unicl``), or a new linear head."""

    mode: Literal["unicl", "linear"] = "unicl"
    steps: int = field(100, min=1)
    batch_size: int = field(32, min=2)
    lr: float = field(1e-4, min=0.0, max=1.0, help="peak lr (paper: 2e-5 at batch 8,192)")
    weight_decay: float = field(0.05, min=0.0, max=1.0)
    warmup_steps: int = field(10, min=0, help="linear warmup before the cosine decay (paper: 500)")
    precision: Literal["fp32", "bf16"] = "fp32"


@dataclass
class EvalConfig:
    checkpoint: str | None = field(None, help="checkpoint dir, weights file or run dir; null: untrained")
    model: str = field("unicl_tiny", help="preset used when checkpoint is null")
    data_root: str | None = field(None, help="real evaluation data (../shared/data); null: the world only")
    dataset: str = field("world", help="world, world-heldout, world-<domain>, eurosat, cifar10_test, "
                                       "isic2018, plantvillage_apple, chestx14, coco; or a path: an "
                                       "ImageFolder (train/ + test/, or one folder), a COCO-captions .json, "
                                       "a .csv/.tsv of image,caption rows")
    images: str | None = field(None, help="image folder of a COCO-captions .json dataset (default: inferred)")
    image_size: int | None = field(None, min=16, max=1024,
                                   help="evaluation resolution; null: the one the checkpoint finished at (a model "
                                        "evaluated at an untrained size loses most of what it learnt), 64 untrained")
    batch_size: int = field(64, min=1, help="images per encoder forward pass")
    max_images: int | None = field(None, min=1, help="cap on images per split (world: images drawn)")
    test_fraction: float = field(0.5, min=0.05, max=0.95,
                                 help="sets without splits: (stratified) share held out as test")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = field(0, min=0)
    cache_classifiers: bool = field(True, help="cache zero-shot text classifiers in the run directory")
    linear_probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def validate(self) -> None:
        if self.finetune.warmup_steps >= self.finetune.steps:
            raise ConfigError(f"finetune.warmup_steps: {self.finetune.warmup_steps} must be below "
                              f"finetune.steps {self.finetune.steps}")
