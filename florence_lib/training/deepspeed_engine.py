"""The engine's DeepSpeed backend: ZeRO 0-3, bf16/fp16, gradient cache, checkpoints in the run-directory layout.

:class:`DeepSpeedEngine` replaces :class:`~florence_lib.training.engine.Engine`'s step and checkpointing and keeps
its loop (:meth:`Engine.fit`), so pretraining and the adapters run unchanged on one process or on a cluster.
DeepSpeed's micro-steps are the gradient-cache chunks (``ds_config``): each chunk's backward goes through
``engine.backward`` and ``engine.step``, and DeepSpeed reduces gradients, clips and updates at the last chunk.

A checkpoint is the usual ``step-XXXXXXXX/`` directory: ``model.safetensors`` (fp32 weights consolidated from the
ZeRO partitions, loadable with ``load_checkpoint`` and no DeepSpeed), ``config.yaml``, and ``deepspeed/`` with
every rank's partition of weights and optimizer state plus the step and RNG states for an exact resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from .. import distributed as D
from ..config import to_dict
from ..runs import PROJECT_ROOT, RunDir
from .checkpoint import CONFIG, WEIGHTS, checkpoint_name, list_checkpoints, rng_state, set_rng_state
from .engine import Batch, Engine, Objective, move_to
from .grad_cache import grad_cache_step, split_batch

TAG = "deepspeed"
"""Sub-directory of a checkpoint holding DeepSpeed's own files."""

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def import_deepspeed() -> Any:
    """DeepSpeed, with its JIT-compiled ops cached inside the project (built once, ~50 s) and one process group.

    A single process gets a one-rank group: DeepSpeed needs one, and would otherwise look for MPI.
    """
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(PROJECT_ROOT / ".torch_extensions"))
    if not D.is_distributed() and int(os.environ.get("WORLD_SIZE", 1)) == 1:
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": os.environ.get("MASTER_PORT", str(D.free_port()))})
        import torch.distributed as dist

        dist.init_process_group(D.default_backend())
    D.init_distributed()
    import deepspeed

    deepspeed.init_distributed(dist_backend=D.default_backend())
    return deepspeed


class DeepSpeedEngine(Engine):
    """:class:`Engine` on ``deepspeed.initialize``; ``ds_config`` comes from ``ds_config.build_ds_config``."""

    data_parallel = True

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        *,
        ds_config: Mapping[str, Any],
        device: torch.device,
        precision: str = "fp32",
        chunk_size: int | None = None,
        accumulation_steps: int = 1,
    ) -> None:
        deepspeed = import_deepspeed()
        self.ds, optimizer, _, scheduler = deepspeed.initialize(
            model=model.to(device), optimizer=optimizer, lr_scheduler=scheduler, config=dict(ds_config))
        # DeepSpeed clips itself; it holds the weights in the training precision (see autocast).
        super().__init__(self.ds.module, objective, optimizer, scheduler, device=device, precision="fp32",
                         grad_clip=None)
        self.dtype = _DTYPES[precision]
        self.chunk_size, self.accumulation_steps = chunk_size, accumulation_steps

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the weights' precision: DeepSpeed casts parameters, not buffers (attention masks, position
        tables) or inputs, which would otherwise meet bf16/fp16 weights in fp32."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def _backward(self, loss: torch.Tensor) -> None:
        """One micro-step: DeepSpeed's backward (loss scaling, ZeRO reduction hooks) and its step, which updates
        only at the accumulation boundary. Scaled here, not by DeepSpeed, because gradient-cache chunks of one
        contrastive batch must add up, not average."""
        self.ds.backward(loss / self.accumulation_steps, scale_wrt_gas=False)
        self.ds.step()

    def train_step(self, batch: Batch) -> dict[str, float]:
        self.ds.train()
        batch = move_to(batch, self.device)
        lr = self.ds.get_lr()[0]
        losses = []
        for part in split_batch(batch, len(batch["label"]) // self.accumulation_steps):
            if self.chunk_size is None:
                with self.autocast():
                    loss, _ = self.objective(self.ds, part)
                self._backward(loss)
            else:
                loss = grad_cache_step(self.ds, part, self.objective.features_loss, chunk_size=self.chunk_size,
                                       backward=self._backward, autocast=self.autocast)
            losses.append(loss.item())
        # Each rank scored its own rows: the mean over ranks is the loss of the global batch.
        loss = D.all_reduce_mean([sum(losses) / len(losses)]).item()
        if not torch.isfinite(torch.tensor(loss)):
            raise FloatingPointError(f"step {self.step}: loss is {loss}")
        self._clamp_parameters()
        self.step += 1
        grad_norm = self.ds.get_global_grad_norm()
        return {"loss": loss, "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"), "lr": lr,
                "logit_scale": self._logit_scale()}

    @torch.no_grad()
    def _clamp_parameters(self) -> None:
        """:func:`clamp_parameters` on both copies DeepSpeed keeps: the fp32 master weights its optimizer updates
        and the module's parameter. A clamp is elementwise, so under ZeRO-3 each rank clamps its own partition."""
        from deepspeed.utils import (
            safe_get_full_fp32_param,
            safe_get_local_fp32_param,
            safe_set_full_fp32_param,
            safe_set_local_fp32_param,
        )

        bounds = getattr(self.model, "parameter_bounds", None)
        for name, (low, high) in (bounds() if bounds is not None else {}).items():
            param = self.model.get_parameter(name)
            if hasattr(param, "ds_id"):  # ZeRO-3: this rank's slices of the master and of the module copy
                safe_set_local_fp32_param(param, safe_get_local_fp32_param(param).clamp(low, high))
                param.ds_tensor.clamp_(low, high)
                param.data.clamp_(low, high)  # empty when partitioned; the whole value when small enough to persist
                continue
            master = safe_get_full_fp32_param(param)  # ZeRO-1/2 and the bf16 optimizer; None without ZeRO
            if master is not None:
                safe_set_full_fp32_param(param, master.clamp(low, high))
            param.clamp_(low, high)

    def _logit_scale(self) -> float:
        import deepspeed

        param = self.model.logit_scale
        with deepspeed.zero.GatheredParameters([param], enabled=hasattr(param, "ds_id")):
            return self.model.temperature_scale().item()

    def fit(self, batches: Iterable[Batch], until: int, *, run_dir: RunDir | None = None,
            evaluate: Callable[[], dict[str, float]] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        """:meth:`Engine.fit` with the metrics written by rank 0 only and evaluation in the weights' precision."""
        def evaluate_cast() -> dict[str, float]:
            with self.autocast():
                return evaluate()

        return super().fit(batches, until, run_dir=run_dir if D.is_main_process() else None,
                           evaluate=None if evaluate is None else evaluate_cast, **kwargs)

    # ------------------------------------------------------------------------------------------- checkpoints
    def save(self, directory: str | Path, *, model_spec: Mapping[str, Any], config: Any = None,
             keep: int | None = None) -> Path:
        """Every rank writes its partition; rank 0 consolidates the weights and renames the directory into place."""
        directory = Path(directory)
        final = directory / checkpoint_name(self.step)
        tmp = directory / (final.name + ".tmp")
        if D.is_main_process():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        D.barrier()
        self.ds.save_checkpoint(str(tmp), tag=TAG, client_state={"step": self.step, "rng": rng_state()})
        D.barrier()
        if D.is_main_process():
            save_file(self.consolidated_state_dict(tmp), str(tmp / WEIGHTS),
                      metadata={"model": json.dumps(dict(model_spec)), "step": str(self.step)})
            if config is not None:
                (tmp / CONFIG).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            if keep is not None:
                for old in list_checkpoints(directory)[:-keep]:
                    shutil.rmtree(old)
        D.barrier()
        return final

    def consolidated_state_dict(self, checkpoint: str | Path) -> dict[str, torch.Tensor]:
        """fp32 weights of the whole model: from the ZeRO partitions of ``checkpoint`` (stages 1-3) or, without
        partitions (stage 0), from the module itself."""
        if self.ds.zero_optimization_stage() == 0:
            state = self.model.state_dict()
        else:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=TAG)
        return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}

    def module_state_dict(self) -> dict[str, torch.Tensor]:
        import deepspeed

        params = [p for p in self.model.parameters() if hasattr(p, "ds_id")]  # ZeRO-3 shards; none below stage 3
        with deepspeed.zero.GatheredParameters(params, enabled=bool(params)):
            return {k: v.detach().float().cpu().clone() for k, v in self.model.state_dict().items()}

    def resume(self, checkpoint: str | Path) -> None:
        """Restore weights, optimizer, scheduler, step and RNG from a checkpoint written by :meth:`save`."""
        _, client = self.ds.load_checkpoint(str(Path(checkpoint)), tag=TAG)
        if client is None:
            raise FileNotFoundError(f"{checkpoint}: no {TAG}/ checkpoint to resume from")
        self.step = int(client["step"])
        set_rng_state(client["rng"])


