"""Training: one engine (steps, bf16 autocast, clipping, checkpoints, exact resume) and UniCL pretraining."""

from florence_lib.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from florence_lib.training.config import DataConfig, OptimConfig, PhaseConfig, PretrainConfig
from florence_lib.training.engine import Engine, resolve_device
from florence_lib.training.objectives import ContrastiveObjective
from florence_lib.training.optim import build_optimizer, param_groups
from florence_lib.training.pretrain import build_engine, pretrain
from florence_lib.training.schedules import build_scheduler, warmup_cosine

__all__ = [
    "ContrastiveObjective",
    "DataConfig",
    "Engine",
    "OptimConfig",
    "PhaseConfig",
    "PretrainConfig",
    "build_engine",
    "build_optimizer",
    "build_scheduler",
    "latest_checkpoint",
    "load_checkpoint",
    "param_groups",
    "pretrain",
    "resolve_device",
    "save_checkpoint",
    "warmup_cosine",
]
