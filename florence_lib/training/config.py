"""PretrainConfig: everything ``python -m florence_lib pretrain`` needs, typed and range-checked.

Profiles in ``florence_lib/configs/pretrain/{smoke,quick,paper}.yaml`` override these defaults; the defaults
themselves are a small CPU run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..config import ConfigError, field
from ..data.sources import SourceConfig
from .ds_config import DistributedConfig


@dataclass
class DataConfig:
    """What to train on (``sources``; the embedded world by default) and how its pairs are batched.

    ``sources`` entries are ``{kind: world | world_shapes | shards | pairs | imagefolder, path, weight, ...}`` (see
    ``florence_lib.data.sources``); the world keys below configure a ``world`` source. Assumptions where the paper
    is silent: weights are open_clip's upsampling factors; image-folder and world_shapes sources are image-label
    data, used in phases with ``image_label_fraction`` > 0 (the paper's stage 1) and left out of the others
    unless nothing else is left (a source's ``phases`` names its phases instead); validation stays on the world's
    held-out classes whatever the sources.
    """

    sources: list[SourceConfig] = field(default_factory=list,
                                        help="training data, mixed by weight; empty: [{kind: world}]")
    shuffle_buffer: int = field(1000, min=0, help="streamed sources: samples in each reader's shuffle buffer")
    strict: bool = field(False, help="raise on the first bad sample (naming shard and key) instead of skipping it")

    world_seed: int = field(0, min=0, help="seed of the world's layouts (not of training)")
    train_size: int = field(20_000, min=1, help="training image-text pairs drawn from the world")
    val_size: int = field(256, min=1, help="held-out images for zero-shot and retrieval validation")
    image_size: int = field(64, min=16, max=1024, help="image side in pixels (a phase may change it)")
    batch_size: int = field(64, min=2, help="images per optimizer step (UniCL needs at least 2)")
    caption: Literal["mixed", "short", "long", "varied"] = field(
        "mixed", help="which captions pair with an image: short, long (the most descriptive), mixed (short with "
        "probability repetition, else long), varied (short with probability repetition, else any descriptive one)")
    repetition: float = field(0.4, min=0.0, max=1.0,
                              help="mixed captions: share of pairs using the short caption many images share")
    grayscale: float = field(0.0, min=0.0, max=1.0,
                             help="probability that a training image is turned grey (torchvision RandomGrayscale); "
                                  "shape and position words stay true, colour words do not, so keep it small")
    invert: float = field(0.0, min=0.0, max=1.0,
                          help="probability that a training image is colour-inverted (RandomInvert), drawn "
                               "independently of grayscale; colour words turn false, so keep it small")
    hard_negatives: float = field(
        0.0, min=0.0, max=1.0,
        help="world source: share of the pairs with a multi-object descriptive caption that also carry a hard "
             "negative, that caption with an attribute (colour, shape or position) swapped between two objects "
             "(NegCLIP); it is an extra image-to-text column no image has as positive. Assumes a swapped caption "
             "is false of every image (one that is some training pair's text is dropped). One process only: "
             "not with the gradient cache or DeepSpeed")
    num_workers: int = field(0, min=0, max=64, help="DataLoader worker processes")

    def validate(self) -> None:
        if self.sources and not any(s.weight > 0 for s in self.sources):
            raise ConfigError("sources: every weight is 0; nothing to train on")


@dataclass
class OptimConfig:
    """AdamW with decoupled weight decay and a warmup-cosine schedule over all phases."""

    lr: float = field(5e-4, min=0.0, max=1.0, help="peak learning rate")
    image_lr: float | None = field(None, min=0.0, max=1.0,
                                   help="peak lr of the image tower and its projection (null: lr); the text "
                                        "tower collapses at rates the image tower needs (issue 10)")
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98], min=0.0, max=0.999999)
    eps: float = field(1e-6, min=0.0, max=1.0)
    weight_decay: float = field(0.2, min=0.0, max=1.0, help="decoupled; none on norms/biases/temperature/embeddings")
    warmup_steps: int = field(20, min=0)
    min_lr_ratio: float = field(0.0, min=0.0, max=1.0, help="final lr as a fraction of the peak")
    grad_clip: float | None = field(1.0, min=0.0, help="max global gradient norm; null switches clipping off")
    fused: bool = field(True, help="single-kernel AdamW update where the device supports it")

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"betas: expected two values, got {self.betas!r}")


@dataclass
class PhaseConfig:
    """One stretch of the schedule. The paper: (1) all data incl. prompt-augmented image-label pairs, (2) without
    them, (3) a higher resolution, where a new window size interpolates the relative-position-bias tables."""

    name: str = "stage1"
    steps: int = field(100, min=1)
    image_label_fraction: float = field(0.0, min=0.0, max=1.0,
                                        help="fraction of samples that are image-label data as prompted text")
    image_size: int | None = field(None, min=16, max=1024, help="null: data.image_size")
    window_size: int | None = field(None, min=1, max=64, help="null: the previous phase's (first phase: the preset's)")
    grayscale: float | None = field(None, min=0.0, max=1.0, help="null: data.grayscale (this phase's probability)")
    invert: float | None = field(None, min=0.0, max=1.0, help="null: data.invert (this phase's probability)")


@dataclass
class PretrainConfig:
    model: str = field("unicl_tiny", help="preset name of florence_lib.models.create_model")
    model_overrides: dict[str, Any] = field(default_factory=dict,
                                            help="changes to the preset's config, e.g. {image: {drop_path_rate: 0.1}}")
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    phases: list[PhaseConfig] = field(default_factory=lambda: [
        PhaseConfig("stage1", 150, image_label_fraction=0.5), PhaseConfig("stage2", 50)])
    loss: Literal["unicl", "clip"] = field("unicl", help="UniCL (labels define positives) or CLIP (diagonal)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        "auto", help="auto: CUDA -> bf16, a CPU -> the faster of fp32/bf16 in a probe of the model's step "
                     "(recorded in meta.json); bf16: autocast the forward pass; fp16: deepspeed with loss scaling")
    compile: bool = field(False, help="torch.compile both towers in place (state-dict keys unchanged); costs a "
                                      "compile per phase, pays only on long runs (benchmarks/RESULTS.md)")
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = field(0, min=0, help="torch intra-op CPU threads during the run; 0 keeps the caller's setting "
                                        "(tiny models: 1 is as fast on free cores and far faster on busy ones)")
    seed: int = field(0, min=0)
    log_every: int = field(10, min=1)
    eval_every: int = field(100, min=0, help="validation interval in steps; 0 validates only at the end")
    checkpoint_every: int = field(100, min=0, help="checkpoint interval in steps; 0 saves only at the end")
    checkpoint_keep: int = field(2, min=1, help="checkpoints kept in the run directory")
    resume: bool = field(True, help="continue from the run directory's latest checkpoint when there is one")
    tensorboard: bool = field(False, help="also write metrics.jsonl's records as TensorBoard events to "
                                          "<run_dir>/tensorboard (needs the tensorboard extra)")

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def validate(self) -> None:
        if not self.phases:
            raise ConfigError("phases: at least one phase is needed")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ConfigError(f"phases: names must be unique, got {names}")
        if self.precision == "fp16" and self.distributed.engine != "deepspeed":
            raise ConfigError("precision: fp16 needs dynamic loss scaling, i.e. distributed.engine: deepspeed")
        for i, s in enumerate(self.data.sources):
            unknown = [n for n in s.phases or [] if n not in names]
            if unknown:
                raise ConfigError(f"data.sources[{i}].phases: {unknown} name no phase (phases: {names})")
        if self.data.hard_negatives > 0:
            d = self.distributed
            if d.grad_cache_chunk is not None or d.engine == "deepspeed":
                raise ConfigError("data.hard_negatives: not supported with the gradient cache or DeepSpeed (their "
                                  "chunks and gathers carry the batch's rows, not its extra negative texts); set "
                                  "distributed.grad_cache_chunk: null and engine: torch, or hard_negatives: 0")
            if self.data.sources and not any(s.kind == "world" for s in self.data.sources):
                raise ConfigError("data.hard_negatives: only a world source makes them; data.sources has none")
        if self.optim.warmup_steps >= self.total_steps:
            raise ConfigError(f"optim.warmup_steps: {self.optim.warmup_steps} must be below the total of "
                              f"{self.total_steps} phase steps")
