"""``precision: auto``: the training precision this machine runs fastest, measured rather than assumed.

CUDA -> bf16 (fp32 where the GPU has no bf16). A CPU -> whichever of fp32 and bf16 autocast a short probe of the
model's own forward + backward measures faster (bf16 by a clear margin): CPUs differ too much to guess. One seen had AMX (bf16 matmul 4x
fp32's peak, yet bf16 autocast was slower for unicl_tiny), another (an AMD EPYC without AMX or AVX512-BF16) ran
bf16 at ~0.5 GFLOP/s. The probe leaves the model's weights, gradients and the global RNG as it found them, so a
run's trajectory does not depend on it; the choice and the probe's timings go into the run's ``meta.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_MARGIN = 0.8
"""bf16 is chosen only when its probe takes under 0.8x fp32's: a clear win (it costs precision), and two runs on
one machine (a straight run and its resumed twin, say) do not flip between the two on timing noise."""
PROBE_SAMPLES = 8
"""Samples of the probe batch: enough for the step's kernels to be the run's, few enough to cost seconds."""


def _slice_batch(batch: Mapping[str, Any], n: int) -> dict[str, Any]:
    return {k: v[:n] if isinstance(v, (torch.Tensor, list)) else v for k, v in batch.items()}


def probe_seconds(model: nn.Module, objective: Callable, batch: Mapping[str, Any], precision: str,
                  device: torch.device, repeats: int = 2, give_up_after: float | None = None) -> float:
    """Best seconds of ``repeats`` forward + backward passes of ``objective(model, batch)`` in ``precision``
    (after one warm-up pass, never timed); stops early, returning that pass's time, once a timed pass takes over
    ``give_up_after``. The warm-up is exempt because a precision's first pass builds its kernels (oneDNN's bf16
    ones took 0.23-0.27 s against 0.02 s once built, on a 2-core AMD EPYC with avx512_bf16): judged on it, the
    same machine resolved ``auto`` to bf16 in one run and fp32 in the next."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    best = float("inf")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for i in range(repeats + 1):
            t = time.perf_counter()
            with autocast:
                loss, _ = objective(model, batch)
            loss.backward()
            seconds = time.perf_counter() - t
            if i == 0:  # warm-up
                continue
            best = min(best, seconds)
            if give_up_after is not None and seconds > give_up_after:
                break
    model.zero_grad(set_to_none=True)
    return best


def resolve_precision(precision: str, device: torch.device, model: nn.Module | None = None,
                      objective: Callable | None = None, batch: Mapping[str, Any] | None = None
                      ) -> tuple[str, dict[str, Any]]:
    """The precision to train in, and a record of how it was chosen (for ``meta.json``).

    An explicit precision passes through. ``auto`` on a CPU with ``model``, ``objective`` and ``batch`` probes fp32
    then bf16 (without them it is fp32) on :data:`PROBE_SAMPLES` samples of ``batch`` (bf16 gives up once a pass takes 3x
    fp32's best: it has already lost).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision, {"requested": precision, "resolved": precision, "reason": "set in the config"}
    if device.type == "cuda":
        resolved = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return resolved, {"requested": "auto", "resolved": resolved, "reason": f"CUDA: {resolved}"}
    if model is None or objective is None or batch is None:  # nothing to probe: the safe choice
        return "fp32", {"requested": "auto", "resolved": "fp32", "reason": "CPU, no probe batch: fp32"}
    probe = _slice_batch(batch, PROBE_SAMPLES)
    fp32 = probe_seconds(model, objective, probe, "fp32", device)
    bf16 = probe_seconds(model, objective, probe, "bf16", device, give_up_after=3 * fp32)
    resolved = "bf16" if bf16 < BF16_MARGIN * fp32 else "fp32"
    return resolved, {"requested": "auto", "resolved": resolved,
                      "reason": f"CPU probe, forward + backward of {len(probe['image'])} samples",
                      "probe_seconds": {"fp32": fp32, "bf16": bf16}}
