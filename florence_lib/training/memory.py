"""Per-GPU memory of model states under each ZeRO stage (Rajbhandari et al. 2020, "ZeRO", §3 and Fig. 1).

Model states are the parameters, their gradients and the optimizer state. With mixed precision and Adam, a
parameter costs 2 bytes (bf16/fp16 weights) + 2 (gradient) + K = 12 (fp32 master weight, momentum, variance);
in fp32 it costs 4 + 4 + 8. ZeRO partitions over the N data-parallel ranks: stage 1 the optimizer state, stage 2
also the gradients, stage 3 also the parameters. ZeRO++'s hierarchical partitioning (hpZ) adds a secondary copy
of the weights partitioned within a node only. Activations and buffers are not model states: the gradient cache
and activation checkpointing bound those (``benchmarks/bench_scaling.py`` measures both).
"""

from __future__ import annotations

BYTES = {"fp32": (4, 4, 8), "bf16": (2, 2, 12), "fp16": (2, 2, 12)}
"""precision -> bytes per parameter of (weights, gradients, optimizer state) with Adam."""


def model_state_bytes(
    num_params: int, zero_stage: int, world_size: int, precision: str = "bf16", hpz_partition_size: int = 1,
) -> dict[str, float]:
    """Bytes of ``params``, ``grads``, ``optimizer`` and their ``total`` held by one rank."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage: {zero_stage} is not one of 0, 1, 2, 3")
    if precision not in BYTES:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(BYTES)}")
    p, g, k = (b * num_params for b in BYTES[precision])
    n = world_size
    params = p / n if zero_stage == 3 else p
    if zero_stage == 3 and hpz_partition_size > 1:
        params += p / hpz_partition_size
    out = {"params": params, "grads": g / n if zero_stage >= 2 else g, "optimizer": k / n if zero_stage >= 1 else k}
    out["total"] = sum(out.values())
    return out


def zero_table(
    num_params: int, world_sizes: list[int], precision: str = "bf16", hpz_partition_size: int = 1,
) -> list[dict[str, float]]:
    """One row per (stage, world size): GiB per rank of model states, for a table or a plot."""
    gib = 2.0**30
    return [{"zero_stage": s, "world_size": n, **{k: v / gib for k, v in model_state_bytes(
        num_params, s, n, precision, hpz_partition_size if s == 3 else 1).items()}}
        for s in range(4) for n in world_sizes]


def model_zero_table(
    name: str, world_sizes: list[int], precision: str = "bf16", **overrides: object,
) -> list[dict[str, float]]:
    """:func:`zero_table` for model preset ``name``, counted on the meta device (no memory, no init time)."""
    from ..models import count_parameters

    counts = count_parameters(name, **overrides)
    return [{"model": name, "num_params": counts["total"], **row}
            for row in zero_table(counts["total"], world_sizes, precision)]
