"""Process-group helpers and the all-gather that lets a contrastive loss see the global batch.

Contrastive losses need every rank's features as negatives. :func:`all_gather_with_grad` concatenates them and,
unlike ``torch.distributed.all_gather``, keeps the autograd graph: its backward sums the gradient that every rank
computed for a rank's slice and hands that rank its share. With each rank computing the loss of its own rows
against all columns and the optimizer averaging gradients over ranks (DDP, DeepSpeed), a W-rank step then has
exactly the loss and gradients of one process holding the whole batch (``tests/test_distributed.py``).

Ranks are found from the environment that torchrun, the DeepSpeed launcher or Slurm's ``srun`` set up, so the
same entry point runs under all three; CPU runs use gloo, CUDA runs NCCL.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

_SLURM_TO_TORCH = {"SLURM_PROCID": "RANK", "SLURM_NTASKS": "WORLD_SIZE", "SLURM_LOCALID": "LOCAL_RANK"}


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    return rank() == 0


def default_backend() -> str:
    """NCCL where CUDA is available, gloo otherwise (the CPU runs and tests here)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def device() -> torch.device:
    """This rank's device: its local GPU, or the CPU."""
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def env_from_slurm(environ: dict[str, str] | None = None) -> dict[str, str]:
    """torch.distributed's variables (RANK, WORLD_SIZE, LOCAL_RANK) derived from a Slurm task's, where missing.

    ``srun`` starts one task per GPU and tells each its place only through ``SLURM_*``; MASTER_ADDR and
    MASTER_PORT are exported by the sbatch script (first host of the allocation).
    """
    environ = os.environ if environ is None else environ
    return {torch_key: environ[slurm_key] for slurm_key, torch_key in _SLURM_TO_TORCH.items()
            if slurm_key in environ and torch_key not in environ}


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by the environment; return False (and do nothing) for a single process.

    Called once per process by every entry point; a no-op when the group already exists (e.g. DeepSpeed made it).
    """
    if is_distributed():
        return True
    os.environ.update(env_from_slurm())
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; launch with "
                           "torchrun, deepspeed or srun (see cluster/README.md)")
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 0; backward returns the rank's slice of the summed gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.n, ctx.rank = tensor.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # all_reduce instead of reduce_scatter: gloo has no reduce_scatter, and features are small (batch x dim).
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``cat`` of every rank's ``tensor`` (equal shapes) along dim 0, differentiable; identity on one process."""
    if not is_distributed() or world_size() == 1:
        return tensor
    _check_equal_batch(tensor)
    return _AllGatherWithGrad.apply(tensor)


def all_gather_nograd(tensor: torch.Tensor) -> torch.Tensor:
    """``cat`` of every rank's ``tensor`` along dim 0 without a graph (labels, indices)."""
    if not is_distributed() or world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def _check_equal_batch(tensor: torch.Tensor) -> None:
    """all_gather needs one shape on every rank; say so instead of hanging or failing inside the backend."""
    sizes = all_gather_nograd(torch.tensor([tensor.shape[0]], device=tensor.device)).tolist()
    if len(set(sizes)) > 1:
        raise ValueError(f"per-rank batch sizes differ ({sizes}); use drop_last=True so every rank gathers the "
                         "same number of features")


def gather_features(
    image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The ``all_*`` keywords of ``florence_lib.losses``: every rank's features (with gradients) and labels.

    ``unicl_loss(img, txt, labels, scale, **gather_features(img, txt, labels))`` scores this rank's rows against
    the global batch; see the module docstring for why that, averaged over ranks by the optimizer, equals the
    single-process loss. On one process the keywords are the local tensors themselves.
    """
    out = {"all_image_features": all_gather_with_grad(image_features),
           "all_text_features": all_gather_with_grad(text_features)}
    if labels is not None:
        out["all_labels"] = all_gather_nograd(labels)
    return out


def all_reduce_mean(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a float vector, for logging the global loss; the input on one process."""
    t = torch.as_tensor(values, dtype=torch.float64, device=device()).clone()
    if is_distributed():
        dist.all_reduce(t)
        t /= world_size()
    return t


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def destroy() -> None:
    if is_distributed():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------- local ranks
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_local(fn: Callable[..., Any], *args: Any, world_size: int = 2, threads: int = 1) -> list[Any]:
    """``fn(*args)`` on ``world_size`` local processes joined in a gloo group; each rank's return value, in order.

    What tests, benchmarks and notebooks use to check multi-rank behaviour on one CPU machine. ``fn`` must be
    importable (module level); its result travels through ``torch.save``, so tensors are fine. The ranks are
    forked (they start in a second instead of re-importing torch) unless CUDA is initialised, which forking breaks.
    """
    method = "spawn" if torch.cuda.is_initialized() else "fork"
    with tempfile.TemporaryDirectory(prefix="florence_ranks_") as tmp:
        mp.start_processes(_run_rank, args=(fn, args, world_size, free_port(), threads, tmp), nprocs=world_size,
                           start_method=method)
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


def _run_rank(rank_: int, fn: Callable[..., Any], args: tuple, world: int, port: int, threads: int,
              out: str) -> None:
    os.environ.update({"RANK": str(rank_), "LOCAL_RANK": str(rank_), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": str(threads)})
    torch.set_num_threads(threads)
    init_distributed("gloo")
    try:
        torch.save(fn(*args), Path(out) / f"rank{rank_}.pt")
    finally:
        destroy()


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """``threads`` torch CPU threads inside the block (0: unchanged), the caller's setting restored after it."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
