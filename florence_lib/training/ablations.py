"""Seeded ablation arms of the pretraining recipe: each arm is a list of config overrides, run once per seed at
one budget, then summarised as mean +- 95% CI per metric and compared pairwise (``florence_lib.stats``).

The paper's claims (UniCL vs CLIP where captions repeat, long vs short captions, and here also the pretrained
MiniLM text tower vs the from-scratch transformer) are differences between runs; one run per arm cannot tell a
difference from seed noise, so every arm runs on the same seeds and the verdict comes with a p-value.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ..config import load_config
from ..runs import RunDir
from ..stats import compare, mean_ci
from .config import PretrainConfig
from .pretrain import pretrain

METRICS = ("zero_shot_top1", "zero_shot_top1_all", "i2t_r1", "t2i_r1", "class_prompt_cosine", "final_loss")
"""What pretraining's final validation reports, for every arm."""


def run_arms(arms: Mapping[str, Sequence[str]], seeds: Sequence[int], *, profile: str, run_dir: RunDir,
             common: Sequence[str] = (), workers: int = 1) -> dict[str, list[dict[str, Any]]]:
    """``{arm: [results of seed 0, seed 1, ...]}``: each run is ``profile`` + ``common`` + the arm's overrides,
    from scratch (no resume, no periodic validation or checkpoints), in ``run_dir/<arm>/seed<k>``.

    ``workers`` > 1 runs that many arms at once, each in its own (spawned) process: the quick profile trains on
    one thread (a tiny model is as fast on one as on two), so on 2 cores two arms at once take about the time of
    one. Every run is seeded, so the results do not depend on ``workers``."""
    jobs = [(arm, seed, load_config(PretrainConfig, command="pretrain", profile=profile, overrides=[
        f"seed={seed}", "resume=false", "eval_every=0", "checkpoint_every=0", "checkpoint_keep=1",
        *common, *changes])) for arm, changes in arms.items() for seed in seeds]
    paths = [run_dir.sub(f"{arm}/seed{seed}").path for arm, seed, _ in jobs]
    if workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("spawn")  # fork would copy the notebook kernel's threads
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            results = list(pool.map(_run_one, [cfg for _, _, cfg in jobs], paths))
    else:
        results = [_run_one(cfg, path) for (_, _, cfg), path in zip(jobs, paths)]
    out: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for (arm, _, _), result in zip(jobs, results):
        out[arm].append(result)
    return out


def _run_one(cfg: PretrainConfig, path: Path) -> dict[str, Any]:
    return pretrain(cfg, RunDir(path))


def arm_records(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One flat record per (arm, metric): mean, 95% CI half-width, number of seeds and the values."""
    records = []
    for arm, runs in results.items():
        for metric in METRICS:
            values = [float(r[metric]) for r in runs if r.get(metric) is not None]
            if values:
                ci = mean_ci(values)
                records.append({"task": "ablation", "dataset": "world", "arm": arm, "metric": metric,
                                "mean": ci.mean, "ci95": ci.half_width, "seeds": ci.n, "values": values})
    return records


def claim_records(results: Mapping[str, Sequence[Mapping[str, Any]]], claims: Mapping[str, tuple[str, str]],
                  metrics: Sequence[str] = ("zero_shot_top1", "zero_shot_top1_all", "i2t_r1", "t2i_r1"),
                  ) -> list[dict[str, Any]]:
    """For each claim ``name: (arm a, arm b)`` and metric: a - b, Welch's p-value, and significance at 0.05."""
    records = []
    for claim, (a, b) in claims.items():
        for metric in metrics:
            c = compare([r[metric] for r in results[a]], [r[metric] for r in results[b]])
            records.append({"task": "ablation_claim", "dataset": "world", "claim": claim, "arm_a": a, "arm_b": b,
                            "metric": metric, "mean_a": c.a.mean, "ci95_a": c.a.half_width, "mean_b": c.b.mean,
                            "ci95_b": c.b.half_width, "difference": c.difference, "p_value": c.p_value,
                            "significant": c.significant})
    return records
