"""VLConfig: everything ``python -m florence_lib vl pretrain|vqa|caption`` and notebook 10 need.

Profiles in ``florence_lib/configs/vl/{smoke,quick,paper}.yaml``. Defaults follow METER's VQAv2 recipe where it
applies (AdamW, weight decay 0.01, linear warmup 10% then decay, head lr x50 and fusion lr x5 of the
encoders' lr, 3,129 answers); the world sizes are ours. Assumptions where METER/Florence are silent:
- the world has one certain answer per question, so its targets are one-hot (see ``answers.soft_targets``);
- one shared forward pass for MLM and ITM (see ``objectives``);
- the world pretraining captions are all of a scene's captions (short to long), the VQA images the same size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..config import ConfigError, field


@dataclass
class OptimConfig:
    steps: int = field(1000, min=1)
    batch_size: int = field(32, min=2)
    lr: float = field(1e-4, min=0.0, max=1.0, help="lr of the image and text encoders")
    fusion_lr_mult: float = field(5.0, min=0.0, help="fusion, maps, poolers: lr x this (METER: 5)")
    head_lr_mult: float = field(5.0, min=0.0, help="task heads: lr x this (METER VQA: 50)")
    weight_decay: float = field(0.01, min=0.0, max=1.0)
    warmup_fraction: float = field(0.1, min=0.0, max=0.9)
    log_every: int = field(10, min=1)


@dataclass
class PretrainTaskConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    scenes: int = field(2000, min=1, help="world train scenes (each with all its captions)")
    val_scenes: int = field(200, min=1, help="world val scenes for the held-out MLM/ITM accuracies")
    mlm_probability: float = field(0.15, min=0.01, max=1.0)
    itm_fraction: float = field(0.5, min=0.0, max=1.0, help="share of rows whose image is swapped")
    hard_negatives: bool = field(False, help="ITM negatives drawn by UniCL similarity (needs unicl_checkpoint)")


@dataclass
class VQATaskConfig:
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(head_lr_mult=50.0))
    dataset: Literal["world", "vqav2"] = field("world", help="vqav2: the consensus subset under data_root")
    scenes: int = field(2000, min=1, help="world train scenes (6 questions each)")
    test_scenes: int = field(300, min=1, help="world test scenes")
    top_k: int = field(3129, min=1, help="answer vocabulary size (VQAv2: 3,129)")
    min_count: int = field(1, min=1, help="an answer enters the vocabulary if at least this many questions have it")
    vqav2_steps: int | None = field(None, min=1, help="steps on the vqav2 subset (null: optim.steps); its ~100 "
                                    "training questions take ~400 epochs at the world's 1,200 steps of 32")
    vqav2_train_fraction: float = field(0.5, min=0.05, max=0.95, help="vqav2 subset: share used for training")
    pretrained: bool = field(True, help="start from the VL-pretrained model when one is given or trained")
    cache_features: bool = field(True, help="frozen towers (freeze_image, text.freeze) encode each image and "
                                 "question once instead of every step (vl.feature_cache)")


@dataclass
class CaptionTaskConfig:
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(head_lr_mult=5.0))
    scenes: int = field(1000, min=1, help="world train scenes (each with all its captions)")
    test_scenes: int = field(100, min=1, help="world test scenes (references: all their captions)")
    decoder_layers: int = field(2, min=1)
    beam: int = field(3, min=1, max=16)
    max_length: int = field(20, min=1, help="most generated tokens")
    no_repeat: int = field(2, min=0, max=8, help="decoding never repeats an n-gram of tokens (n <= this) back "
                           "to back (captioning.block_repeat; 0: off); no world caption does for n <= 4 WordPiece "
                           "tokens. 2 scored best in notebook 10 at quick (configs/vl/quick.yaml)")
    length_alpha: float = field(1.0, min=0.0, max=4.0, help="beam ranking: log p / length^alpha")


@dataclass
class VLConfig:
    model: str = field("meter_tiny", help="METER preset: meter_tiny, meter_paper")
    model_overrides: dict[str, Any] = field(default_factory=dict,
                                            help="METERConfig fields over the preset, e.g. {image_stage: 1}")
    unicl_checkpoint: str | None = field(None, help="UniCL checkpoint for the image encoder; null: random init")
    checkpoint: str | None = field(None, help="VL-pretrained METER checkpoint for vqa/caption")
    data_root: str | None = field(None, help="real data (../shared/data) for vqav2 / coco")
    image_size: int = field(64, min=16, max=1024)
    context_length: int = field(40, min=8, max=512, help="text tokens (questions and captions)")
    eval_batch_size: int = field(64, min=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    threads: int | None = field(None, min=1, help="torch threads (null: leave torch's default)")
    seed: int = field(0, min=0)
    world_seed: int = field(0, min=0)
    pretrain: PretrainTaskConfig = field(default_factory=PretrainTaskConfig)
    vqa: VQATaskConfig = field(default_factory=VQATaskConfig)
    caption: CaptionTaskConfig = field(default_factory=CaptionTaskConfig)

    def validate(self) -> None:
        from ..models.meter import meter_config

        try:  # a bad preset name or override key is refused before any work starts
            meter_config(self.model, **self.model_overrides)
        except (KeyError, ValueError, ConfigError) as e:
            raise ConfigError(f"model / model_overrides: {e}") from e
        if self.pretrain.hard_negatives and self.unicl_checkpoint is None:
            raise ConfigError("pretrain.hard_negatives: needs unicl_checkpoint (the similarity comes from UniCL)")
