"""Scaling benchmarks (paper §2.7, Fig. 5 analog), measured on this machine's CPUs.

1. Peak training memory against the contrastive batch size, with and without the gradient cache (unicl_tiny).
   Each point runs in a fresh process; memory is the process's peak resident set (VmHWM, reset before the model
   is built) above the libraries' baseline, so it counts model states, activations and the loss, nothing else.
2. The gradient cache's throughput cost: images/s with and without it at the same batch.
3. Per-rank model-state memory on 2 gloo ranks under ZeRO-3 against ZeRO-0 (live tensor bytes after a step),
   next to the estimate of ``florence_lib.training.memory``.

    python benchmarks/bench_scaling.py              # writes benchmarks/results/scaling.{json,md} (~8 min)
    python benchmarks/bench_scaling.py --zero-only  # only part 3
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from provenance import headline, provenance

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODEL, IMAGE, CONTEXT, CHUNK = "unicl_tiny", 64, 32, 256
# DeepSpeed's default buckets (5e8 elements) are sized for billion-parameter models; at 6M parameters they would
# dwarf the model states being compared. Every parameter is partitioned (no small-parameter persistence).
ZERO_BUFFERS = {"zero_optimization": {"reduce_bucket_size": 1_000_000, "stage3_prefetch_bucket_size": 1_000_000,
                                      "stage3_param_persistence_threshold": 0,
                                      "stage3_max_live_parameters": 1_000_000}}


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def batch(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(1000, 30000, (n, CONTEXT), generator=g)
    ids[:, -1] = 102
    return {"image": torch.randn(n, 3, IMAGE, IMAGE, generator=g), "input_ids": ids,
            "attention_mask": torch.ones(n, CONTEXT, dtype=torch.long), "label": torch.arange(n)}


def measure_step(batch_size: int, chunk: int | None) -> dict[str, float]:
    """One optimizer step in this (fresh) process: peak bytes above the baseline and seconds."""
    from florence_lib.models import create_model
    from florence_lib.training.engine import Engine
    from florence_lib.training.grad_cache import GradCacheEngine
    from florence_lib.training.objectives import ContrastiveObjective
    from florence_lib.training.optim import build_optimizer
    from florence_lib.training.schedules import build_scheduler

    data = batch(batch_size)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    model = create_model(MODEL, text={"context_length": CONTEXT})
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.1)
    kwargs = {"device": torch.device("cpu"), "grad_clip": 1.0}
    sched = build_scheduler(opt, warmup_steps=1, total_steps=10)
    engine = (GradCacheEngine(model, ContrastiveObjective(), opt, sched, chunk_size=chunk, **kwargs) if chunk
              else Engine(model, ContrastiveObjective(), opt, sched, **kwargs))
    t0 = time.perf_counter()
    engine.train_step(data)
    return {"peak_mb": (_status("VmHWM") - base) / 2**20, "seconds": time.perf_counter() - t0}


def run_point(batch_size: int, chunk: int | None) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed memory leaves RSS
    out = subprocess.run([sys.executable, __file__, "--point", str(batch_size), str(chunk or 0)], env=env,
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- ZeRO
def live_tensor_bytes() -> int:
    """Bytes of every distinct storage held by a live tensor (parameters, gradients, optimizer state, buffers)."""
    gc.collect()
    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, torch.Tensor) or obj.is_meta:
                continue
            storage = obj.untyped_storage()
        except (RuntimeError, ReferenceError):
            continue
        if storage.data_ptr() and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def zero_rank_memory() -> dict[str, float]:
    """On each rank: model-state bytes after one step under ZeRO-0 and ZeRO-3, fp32 and bf16 (AdamW)."""
    from florence_lib.config import from_dict
    from florence_lib.models import create_model
    from florence_lib.training.config import PretrainConfig
    from florence_lib.training.pretrain import build_engine

    out = {}
    for precision, stage in itertools.product(("fp32", "bf16"), (0, 3)):
        cfg = from_dict(PretrainConfig, {"data": {"batch_size": 8}, "optim": {"warmup_steps": 1, "fused": False},
                                         "phases": [{"steps": 10}], "precision": precision,
                                         "distributed": {"engine": "deepspeed", "zero_stage": stage,
                                                         "ds_overrides": ZERO_BUFFERS}})
        before = live_tensor_bytes()
        engine = build_engine(cfg, create_model(MODEL, text={"context_length": CONTEXT}), torch.device("cpu"))
        engine.train_step({k: v[:4] for k, v in batch(8).items()})
        out[f"{precision}_zero{stage}_mb"] = (live_tensor_bytes() - before) / 2**20
        del engine
        gc.collect()
    return out


def measure_memory_curve() -> list[dict]:
    memory = []
    for n in [256, 512, 1024, 2048, 4096]:
        for chunk in (CHUNK, None):
            if chunk is None and n > 1024:  # without the cache this outgrows a small machine: the point of Fig. 5
                continue
            memory.append({"batch": n, "grad_cache": chunk is not None, **run_point(n, chunk)})
            print(memory[-1], flush=True)
    return memory


def main(zero_only: bool = False) -> None:
    """Measure and write the results; ``zero_only`` re-measures ZeRO and keeps the stored memory curve."""
    from florence_lib.distributed import run_local
    from florence_lib.models import count_parameters
    from florence_lib.training.memory import model_state_bytes

    memory = (json.loads((RESULTS / "scaling.json").read_text())["memory"] if zero_only
              else measure_memory_curve())
    cached = {r["batch"]: r for r in memory if r["grad_cache"]}
    plain = {r["batch"]: r for r in memory if not r["grad_cache"]}
    ratio = cached[4096]["peak_mb"] / cached[256]["peak_mb"]
    cost = {n: cached[n]["seconds"] / plain[n]["seconds"] for n in plain}

    zero = run_local(zero_rank_memory, world_size=2)[0]
    params = count_parameters(MODEL, text={"context_length": CONTEXT})["total"]
    estimate = {f"{p}_zero{s}_mb": model_state_bytes(params, s, 2, p)["total"] / 2**20
                for p in ("fp32", "bf16") for s in (0, 3)}
    results = {
        **provenance(), "model": MODEL, "image_size": IMAGE, "context_length": CONTEXT, "chunk": CHUNK, "params": params,
        "memory": memory, "grad_cache_4096_over_256": ratio, "grad_cache_time_ratio": cost,
        "zero_per_rank_measured": zero, "zero_per_rank_estimate": estimate,
        "zero3_over_zero0": {p: zero[f"{p}_zero3_mb"] / zero[f"{p}_zero0_mb"] for p in ("fp32", "bf16")},
        "threads": 1, "cpu_count": os.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(results, indent=2))
    lines = [f"# Scaling benchmarks ({headline(results)}; {MODEL}, {IMAGE} px, gradient-cache chunk {CHUNK}, "
             "1 thread per process)", "",
             "| batch | gradient cache | peak MiB | seconds/step |", "|---|---|---|---|"]
    lines += [f"| {r['batch']} | {'yes' if r['grad_cache'] else 'no'} | {r.get('peak_mb', float('nan')):.0f} | "
              f"{r.get('seconds', float('nan')):.2f} |" for r in memory]
    lines += ["", f"With the cache, peak memory at batch 4096 is {ratio:.2f}x that at batch 256.",
              "Time with / without the cache at the same batch: "
              + ", ".join(f"{n}: {c:.2f}x" for n, c in cost.items()), "",
              f"Per-rank model states after one AdamW step on 2 ranks ({params / 1e6:.1f}M params), measured "
              "(live tensor bytes) and estimated (`training/memory.py`, the ZeRO paper's accounting):", "",
              "| precision | ZeRO-0 MiB (est.) | ZeRO-3 MiB (est.) | ZeRO-3 / ZeRO-0 |", "|---|---|---|---|"]
    lines += [f"| {p} | {zero[f'{p}_zero0_mb']:.0f} ({estimate[f'{p}_zero0_mb']:.0f}) | "
              f"{zero[f'{p}_zero3_mb']:.0f} ({estimate[f'{p}_zero3_mb']:.0f}) | {results['zero3_over_zero0'][p]:.2f} |"
              for p in ("fp32", "bf16")]
    lines += ["", "DeepSpeed drops gradients after the step (ZeRO-0 holds none) and keeps an fp32 master partition "
              "next to ZeRO-3's weight shard, even in fp32; its buckets are set to 1M elements here."]
    (RESULTS / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--point", nargs=2, type=int, metavar=("BATCH", "CHUNK"), help=argparse.SUPPRESS)
    parser.add_argument("--zero-only", action="store_true", help="re-measure ZeRO, keep the stored memory curve")
    args = parser.parse_args()
    if args.point:
        torch.set_num_threads(1)
        print(json.dumps(measure_step(args.point[0], args.point[1] or None)))
    else:
        main(args.zero_only)
