"""The ``detect`` command's configuration: data, detector, optimisation, zero-shot transfer.

Profiles live in ``florence_lib/configs/detect/{smoke,quick,paper}.yaml``. Assumptions where the paper is silent
(it gives only "Dynamic Head on CoSwin-H, ATSS, FLOD-9M, multi-scale training"):

- Multi-scale training draws one side per step from ``data.train_sizes`` (all images of a batch share it), as
  the reference's (640-800 px short side) scaled to the world's 64-160 px scenes; evaluation uses
  ``data.image_size``. Horizontal flips with probability ``data.hflip``.
- AdamW (the project's optimizer) with a warmup-cosine schedule, instead of the reference's SGD 0.01: it is
  what the rest of the project trains with, and it is less sensitive to the tiny batch sizes of a CPU.
- A UniCL checkpoint supplies the CoSwin tower; ``freeze_backbone`` keeps it fixed (the zero-shot protocol
  always does: the region classifier needs the tower that matches the text encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import ConfigError, field


@dataclass
class DetectDataConfig:
    dataset: Literal["world", "coco", "merged"] = "world"
    data_root: str | None = field(None, help="folder of the real sets (coco/ for COCO); None -> auto-detect")
    world_seed: int = field(0, min=0, help="seed of the embedded world (same as pretraining's)")
    image_size: int = field(96, min=32, max=1600, help="evaluation side (world scenes are rendered at it)")
    train_sizes: list[int] = field(default_factory=lambda: [80, 96, 112], help="multi-scale training sides")
    hflip: float = field(0.5, min=0.0, max=1.0)
    train_images: int = field(4000, min=1, help="world train scenes (COCO: all train2017 images)")
    eval_images: int = field(200, min=1, help="world test scenes evaluated (COCO: all val2017 images)")

    def validate(self) -> None:
        if not self.train_sizes or min(self.train_sizes) < 32:
            raise ConfigError(f"train_sizes: {self.train_sizes} must be a non-empty list of sides >= 32")


@dataclass
class ZeroShotConfig:
    classifier: Literal["crops", "roi_align"] = field(
        "crops", help="region features: image crops through the image tower (default) or RoI-align on CoSwin")
    crop_size: int = field(48, min=16, max=1024, help="side of a crop fed to the image tower")
    crop_context: float = field(0.15, min=0.0, max=1.0, help="margin added around a proposal, per side")
    labels_per_box: int = field(1, min=1, max=10, help="detections per proposal (its best classes)")
    proposals_per_image: int = field(20, min=1, max=1000)
    eval_images: int = field(200, min=1, help="held-out scenes evaluated")
    proposer_steps: int | None = field(
        None, min=1, help="training steps of the class-agnostic proposer (None: the detector's steps)")


@dataclass
class DetectConfig:
    detector: Literal["dyhead_tiny", "dyhead_paper"] = "dyhead_tiny"
    channels: int | None = field(None, min=8, help="override of the preset's pyramid width")
    num_blocks: int | None = field(None, min=0, help="override of the preset's number of Dynamic Head blocks")
    checkpoint: str | None = field(None, help="UniCL checkpoint supplying the CoSwin tower (None: from scratch)")
    freeze_backbone: bool = False
    data: DetectDataConfig = field(default_factory=DetectDataConfig)
    steps: int = field(600, min=1)
    batch_size: int = field(8, min=1)
    lr: float = field(1e-3, min=0.0)
    backbone_lr: float = field(2e-4, min=0.0, help="lr of the CoSwin tower when it is fine-tuned")
    weight_decay: float = field(0.05, min=0.0)
    warmup_steps: int = field(50, min=0)
    grad_clip: float = field(5.0, min=0.0)
    precision: Literal["fp32", "bf16"] = "fp32"
    device: str = "auto"
    threads: int = field(1, min=0, help="intra-op threads (0: torch's default)")
    seed: int = field(0, min=0)
    log_every: int = field(10, min=1)
    eval_every: int = field(0, min=0, help="evaluate AP on the val split every N steps (0: at the end only)")
    checkpoint_every: int = field(200, min=0)
    zero_shot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
