"""The training loop: one engine for pretraining and for every adapter.

An :class:`Engine` owns the model, an *objective* (``objective(model, batch) -> (loss, logs)``), the optimizer and
the lr scheduler, and does one thing: optimisation steps with bf16 autocast, gradient clipping, logging, periodic
evaluation and periodic checkpoints. Construction of those parts lives elsewhere (``optim.build_optimizer``,
``schedules.build_scheduler``) so that a DeepSpeed engine can replace :meth:`Engine.train_step`,
:meth:`Engine.state_dict`/:meth:`Engine.load_state_dict` and :meth:`Engine.save` while :meth:`Engine.fit` stays.

Exact resume: the training state holds the step, the optimizer and scheduler states and every RNG state; the
caller makes the data order a pure function of the step (see ``batches.StepSampler``), so that a run killed and
resumed from a checkpoint produces the same losses as one that never stopped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import distributed as D
from ..runs import RunDir
from .checkpoint import load_training_state, rng_state, save_checkpoint, set_rng_state
from .progress import Progress

Batch = Mapping[str, Any]
Objective = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]
"""``objective(model, batch) -> (scalar loss, extra scalars to log)``"""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def move_to(batch: Batch, device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def clamp_parameters(model: nn.Module) -> None:
    """Clamp in place the parameters ``model.parameter_bounds()`` names (e.g. the temperature), after a step."""
    bounds = getattr(model, "parameter_bounds", None)
    for name, (low, high) in (bounds() if bounds is not None else {}).items():
        model.get_parameter(name).clamp_(low, high)


class Engine:
    """Optimisation of ``model`` under ``objective``; see the module docstring for what a subclass replaces."""

    data_parallel = False
    """True for engines whose ranks train one model together (DeepSpeed); see :meth:`check_world`."""

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        *,
        device: torch.device,
        precision: str = "fp32",
        grad_clip: float | None = 1.0,
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: {precision!r} is not one of 'fp32', 'bf16'")
        self.model = model
        self.objective = objective
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.precision = precision
        self.grad_clip = grad_clip
        self.step = 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the forward pass (weights, gradients and optimizer state stay fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    # ------------------------------------------------------------------------------------------- one step
    def forward_backward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The batch's loss, its gradients accumulated into ``.grad`` (the seam the gradient cache replaces)."""
        with self.autocast():
            loss, logs = self.objective(self.model, batch)
        loss.backward()
        return loss.detach(), logs

    def train_step(self, batch: Batch) -> dict[str, float]:
        """Forward, backward, clip, update, clamp bounded parameters, advance the schedule; returns the logs."""
        self.model.train()
        loss, logs = self.forward_backward(move_to(batch, self.device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {self.step}: loss is {loss.item()}")
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip or float("inf"))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        clamp_parameters(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return {"loss": loss.item(), "grad_norm": grad_norm.item(), "lr": lr, **logs}

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])

    def module_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's full weights on the CPU (a DeepSpeed engine gathers its ZeRO-3 shards first)."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def save(self, directory: str | Path, *, model_spec: Mapping[str, Any], config: Any = None,
             keep: int | None = None) -> Path:
        """Checkpoint the weights and the full training state at the current step."""
        return save_checkpoint(directory, self.model, step=self.step, model_spec=model_spec, config=config,
                               state=self.state_dict(), keep=keep)

    def resume(self, checkpoint: str | Path) -> None:
        """Restore the training state saved with :meth:`save` (the weights are loaded by whoever built the model)."""
        self.load_state_dict(load_training_state(checkpoint))

    # ------------------------------------------------------------------------------------------- the loop
    def fit(
        self,
        batches: Iterable[Batch],
        until: int,
        *,
        run_dir: RunDir | None = None,
        log_every: int = 10,
        eval_every: int = 0,
        evaluate: Callable[[], dict[str, float]] | None = None,
        checkpoint_every: int = 0,
        checkpoint: Callable[[], Any] | None = None,
        record: Mapping[str, Any] | None = None,
        desc: str = "train",
        progress: str = "auto",
    ) -> list[dict[str, Any]]:
        """Step through ``batches`` until the global step reaches ``until``; returns the logged records.

        Every ``log_every`` steps the step's scalars go to ``run_dir``'s metrics log (plus the constant fields of
        ``record``, e.g. the phase); every ``eval_every`` steps ``evaluate()`` runs and its metrics are logged;
        every ``checkpoint_every`` steps ``checkpoint()`` runs. Evaluation runs under a forked RNG so that it
        cannot change the training randomness. A zero interval switches that action off. Rank 0 shows
        ``progress`` (``training.progress``: a bar in a terminal or notebook, a log line every ``log_every`` steps
        elsewhere); the other ranks show nothing.
        """
        self.check_world()
        records: list[dict[str, Any]] = []

        def emit(entry: dict[str, Any]) -> None:
            entry = {**(record or {}), **entry}
            records.append(entry)
            if run_dir is not None:
                run_dir.log(entry)

        shown = Progress(until, self.step, desc, log_every=log_every, mode=progress,
                         main_process=D.is_main_process())
        fork_devices = None if self.device.type == "cuda" else []
        batches = iter(batches)
        while self.step < until:
            batch = next(batches, None)
            if batch is None:
                raise RuntimeError(f"{desc}: the data ran out at step {self.step}, before step {until}")
            images = batch_images(batch) * D.world_size()
            logs = self.train_step(batch)
            shown.update(self.step, logs, images)
            if log_every and (self.step % log_every == 0 or self.step == until):
                emit({"step": self.step, "split": "train", **logs})
            if evaluate is not None and eval_every and (self.step % eval_every == 0 or self.step == until):
                with torch.random.fork_rng(devices=fork_devices):
                    emit({"step": self.step, "split": "val", **evaluate()})
            if checkpoint is not None and checkpoint_every and self.step % checkpoint_every == 0:
                checkpoint()
        shown.close()
        if run_dir is not None:
            run_dir.flush()
        return records

    def check_world(self) -> None:
        """Refuse a multi-rank launch for an engine that would train every rank alone into one run directory."""
        world = int(os.environ.get("WORLD_SIZE") or 1)
        if world > 1 and not self.data_parallel:
            raise RuntimeError(f"{type(self).__name__} trains in one process, but WORLD_SIZE={world}: every rank "
                               "would train alone on its batch and write to the same run directory; use the "
                               "DeepSpeed engine (distributed.engine: deepspeed) or start one process")


def batch_images(batch: Batch) -> int:
    """Samples in a batch: the leading size of its first tensor (0 if it has none)."""
    return next((int(v.shape[0]) for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0), 0)
