"""DeepSpeed's JSON, generated from our config and checked before anything is launched.

One source of truth: the batch, precision, clipping and ZeRO settings live in the pretraining config
(``data.batch_size``, ``precision``, ``optim.grad_clip``, the ``distributed`` section); :func:`build_ds_config`
derives DeepSpeed's dictionary from them and the launch's world size. Keys we do not model (bucket sizes, comms
logging) can be added through ``distributed.ds_overrides``, but an override may not contradict a key we derive:
that would make two truths.

Batch arithmetic (the paper's run: 24,576 = 512 GPUs x 16 images x 3 gradient-cache chunks)::

    data.batch_size = world_size x micro_batch x chunks x accumulation_steps
    contrastive batch (negatives seen by the loss) = data.batch_size / accumulation_steps

DeepSpeed counts ``chunks x accumulation_steps`` micro-steps per optimizer step, so its own batch assertion holds
and its gradient-accumulation boundary falls on the last chunk of the last accumulation step.

:func:`check_launch` refuses combinations that cannot run (fp16 without CUDA, ZeRO++ partitions that do not
divide the world, batches that do not split evenly) with a message naming the key, before any process starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from ..config import ConfigError, deep_merge, field


@dataclasses.dataclass
class DistributedConfig:
    """How training scales out: engine, ZeRO stage, gradient cache, activation checkpointing."""

    engine: Literal["torch", "deepspeed"] = field("torch", help="'torch': one process; 'deepspeed': ZeRO")
    zero_stage: int = field(0, min=0, max=3, help="DeepSpeed ZeRO stage (0: plain data parallel)")
    grad_cache_chunk: int | None = field(None, min=1,
                                         help="images per forward pass with gradient cache; null: no cache")
    accumulation_steps: int = field(1, min=1, help="contrastive batches summed per optimizer step")
    activation_checkpointing: bool = field(False, help="recompute transformer blocks in the backward pass")
    hpz_partition_size: int = field(1, min=1,
                                    help="ZeRO++ secondary weight partition (GPUs per node); ZeRO-3 only")
    loss_scale_window: int = field(1000, min=1, help="fp16 dynamic loss scaling: steps before raising it")
    initial_scale_power: int = field(16, min=0, max=32, help="fp16 dynamic loss scaling starts at 2**this")
    ds_overrides: dict[str, Any] = field(default_factory=dict,
                                         help="extra DeepSpeed JSON keys (merged; may not contradict ours)")

    def validate(self) -> None:
        if self.engine == "torch" and self.zero_stage > 0:
            raise ConfigError(f"zero_stage: {self.zero_stage} needs engine: deepspeed")
        if self.engine == "torch" and self.accumulation_steps > 1:
            raise ConfigError(f"accumulation_steps: {self.accumulation_steps} needs engine: deepspeed (the torch "
                              "engine grows the contrastive batch with grad_cache_chunk instead)")
        if self.hpz_partition_size > 1 and self.zero_stage != 3:
            raise ConfigError(f"hpz_partition_size: {self.hpz_partition_size} partitions ZeRO-3 weights; "
                              f"zero_stage is {self.zero_stage}")


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How ``data.batch_size`` splits over ranks, chunks and accumulation steps."""

    global_batch: int
    world_size: int
    micro_batch: int
    chunks: int
    accumulation_steps: int

    @property
    def per_rank(self) -> int:
        """Images one rank holds in one contrastive batch (what the gradient cache splits into chunks)."""
        return self.micro_batch * self.chunks

    @property
    def contrastive_batch(self) -> int:
        return self.per_rank * self.world_size

    @property
    def micro_steps(self) -> int:
        """Forward/backward passes per optimizer step: DeepSpeed's ``gradient_accumulation_steps``."""
        return self.chunks * self.accumulation_steps


def plan_batch(batch_size: int, world_size: int, dist: DistributedConfig) -> BatchPlan:
    """Split ``batch_size`` images per optimizer step; ConfigError naming the key when it does not divide."""
    if world_size < 1:
        raise ConfigError(f"world size must be at least 1, got {world_size}")
    per_step = world_size * dist.accumulation_steps
    if batch_size % per_step:
        raise ConfigError(f"data.batch_size: {batch_size} is not divisible by world size {world_size} x "
                          f"distributed.accumulation_steps {dist.accumulation_steps} = {per_step}")
    per_rank = batch_size // per_step
    chunk = dist.grad_cache_chunk or per_rank
    if per_rank % chunk:
        raise ConfigError(f"distributed.grad_cache_chunk: {chunk} does not divide the {per_rank} images per rank "
                          f"(data.batch_size {batch_size} / world {world_size} / accumulation "
                          f"{dist.accumulation_steps})")
    if per_rank * world_size < 2:
        raise ConfigError(f"data.batch_size: a contrastive batch of {per_rank * world_size} has no negatives")
    return BatchPlan(batch_size, world_size, chunk, per_rank // chunk, dist.accumulation_steps)


def check_launch(
    dist: DistributedConfig, *, precision: str, batch_size: int, world_size: int, gpus_per_node: int | None = None,
    cuda: bool,
) -> BatchPlan:
    """Everything that can be known before a process starts; returns the batch plan or raises ConfigError."""
    if precision == "fp16" and not cuda:
        raise ConfigError("precision: fp16 needs CUDA (DeepSpeed's CPU accelerator has no fp16); use bf16 or fp32")
    if dist.engine == "torch" and world_size > 1:
        raise ConfigError(f"distributed.engine: 'torch' runs one process; a world of {world_size} needs 'deepspeed'")
    hpz = dist.hpz_partition_size
    if hpz > 1 and (world_size % hpz or (gpus_per_node and gpus_per_node % hpz)):
        raise ConfigError(f"distributed.hpz_partition_size: {hpz} must divide the world size {world_size}"
                          + (f" and the {gpus_per_node} GPUs per node" if gpus_per_node else ""))
    return plan_batch(batch_size, world_size, dist)


# Keys derived from our config -> the config key that owns them (what an override may not contradict).
OWNED = {
    ("train_batch_size",): "data.batch_size",
    ("train_micro_batch_size_per_gpu",): "distributed.grad_cache_chunk",
    ("gradient_accumulation_steps",): "distributed.accumulation_steps",
    ("gradient_clipping",): "optim.grad_clip",
    ("bf16", "enabled"): "precision",
    ("fp16", "enabled"): "precision",
    ("zero_optimization", "stage"): "distributed.zero_stage",
}


def build_ds_config(
    dist: DistributedConfig, *, precision: str, grad_clip: float | None, plan: BatchPlan, cuda: bool,
) -> dict[str, Any]:
    """DeepSpeed's configuration dictionary for this run (pass it to ``deepspeed.initialize(config=...)``)."""
    zero: dict[str, Any] = {"stage": dist.zero_stage, "contiguous_gradients": True, "overlap_comm": cuda}
    if dist.zero_stage == 3:
        zero |= {"stage3_gather_16bit_weights_on_model_save": False, "zero_hpz_partition_size": dist.hpz_partition_size}
    generated = {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.micro_steps,
        # Always explicit: DeepSpeed clips at 1.0 when the key is absent, which would silently differ from
        # the plain engine. 0 switches clipping off.
        "gradient_clipping": float(grad_clip or 0.0),
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": dist.initial_scale_power,
                 "loss_scale_window": dist.loss_scale_window, "hysteresis": 2, "min_loss_scale": 1},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # our AdamW param groups (no decay on norms, temperature)
        "steps_per_print": 10**9,  # the engine logs; DeepSpeed's own prints would interleave with tqdm
        "wall_clock_breakdown": False,
    }
    merged = deep_merge(generated, dist.ds_overrides)
    for path, owner in OWNED.items():
        if _get(merged, path) != _get(generated, path):
            raise ConfigError(f"distributed.ds_overrides: {'.'.join(path)}={_get(merged, path)!r} contradicts "
                              f"{owner} (which sets it to {_get(generated, path)!r}); change {owner} instead")
    return merged


def _get(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key, {}) if isinstance(d, dict) else {}
    return d


def pretrain_ds_config(cfg: Any, world_size: int, *, cuda: bool, gpus_per_node: int | None = None,
                       ) -> tuple[BatchPlan, dict[str, Any]]:
    """The batch plan and DeepSpeed JSON of a ``PretrainConfig`` launched on ``world_size`` ranks (checked)."""
    plan = check_launch(cfg.distributed, precision=cfg.precision, batch_size=cfg.data.batch_size,
                        world_size=world_size, gpus_per_node=gpus_per_node, cuda=cuda)
    return plan, build_ds_config(cfg.distributed, precision=cfg.precision, grad_clip=cfg.optim.grad_clip,
                                 plan=plan, cuda=cuda)
