"""Where a pretraining step's time goes: torch.profiler over one full training step, ours and open_clip's.

For each preset and thread count: our UniCL step and open_clip's matched CLIP (bench_pretrain.py's twin, same
batch, same Engine and AdamW), each after one warm-up step. The median of a few steps split into phases (forward,
backward, clip + AdamW + zero_grad) and one profiled step's top operators by self CPU time. Runs accumulate in
``results/profile_<preset>.json`` and ``.md`` under their tag (the code state, e.g. ``main f10b969`` / ``after``):
a tag measured again replaces its old run, so one file holds the before and the after.

    python benchmarks/profile_step.py [--presets unicl_tiny unicl_small] [--tag after] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from provenance import headline, provenance
from torch import nn
from torch.profiler import ProfilerActivity, profile

from florence_lib.models import create_model
from florence_lib.training.engine import Engine, clamp_parameters
from florence_lib.training.objectives import ContrastiveObjective

RESULTS = Path(__file__).parent / "results"


def phase_seconds(engine: Engine, batch: dict) -> dict[str, float]:
    """One training step (as ``Engine.train_step``: forward, backward, clip, AdamW, clamp, zero_grad), timed by phase."""
    engine.model.train()
    t0 = time.perf_counter()
    with engine.autocast():
        loss, _ = engine.objective(engine.model, batch)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    nn.utils.clip_grad_norm_(engine.model.parameters(), engine.grad_clip)
    engine.optimizer.step()
    clamp_parameters(engine.model)
    engine.optimizer.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2, "step": t3 - t0}


def top_operators(engine: Engine, batch: dict, top: int) -> tuple[float, list[dict]]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        engine.train_step(batch)
        seconds = time.perf_counter() - t
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
    return seconds, [{"name": e.key, "self_ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in events]


def profile_preset(name: str, batch: dict, precision: str, top: int, steps: int) -> dict:
    from bench_pretrain import OpenClipObjective, engine_for, open_clip_twin

    torch.manual_seed(0)
    ours = create_model(name)
    engines = {"ours": engine_for(ours, ContrastiveObjective("clip"), precision),
               "open_clip": engine_for(open_clip_twin(ours, batch["image"].shape[-1], 30522,
                                                      batch["input_ids"].shape[1]), OpenClipObjective(), precision)}
    for engine in engines.values():
        engine.train_step(batch)  # warm-up: caches, allocator, oneDNN primitives
    phases: dict[str, list[dict]] = {k: [] for k in engines}
    for _ in range(steps):  # alternated, so that load on the shared machine hits both
        for key, engine in engines.items():
            phases[key].append(phase_seconds(engine, batch))
    out = {}
    for key, engine in engines.items():
        seconds, ops = top_operators(engine, batch, top)
        out[key] = {"phases": {p: statistics.median(r[p] for r in phases[key]) for p in phases[key][0]},
                    "profiled_step_seconds": seconds, "top_operators": ops}
    return out


def render(report: dict) -> str:
    preset = report["preset"]
    lines = [f"# Profile of one training step: {preset} ({headline(report)}; latest run)", "",
             "Median of alternated steps by phase (ms), ours vs open_clip's matched CLIP on the same batch; each "
             "run's host, date and load as it recorded them.", "",
             "| run | threads | side | step | forward | backward | clip + AdamW | host, date, load |",
             "|---|---|---|---|---|---|---|---|"]
    for run in report["runs"].values():
        for side in ("ours", "open_clip"):
            p = run[side]["phases"]
            lines.append(f"| {run['tag']} | {run['threads']} | {side} | {1e3 * p['step']:.1f} | {1e3 * p['forward']:.1f} "
                         f"| {1e3 * p['backward']:.1f} | {1e3 * p['optimizer']:.1f} | {run['host']}, {run['date']}, "
                         f"{run['load_average'][0]:.1f} |")
    for run in report["runs"].values():
        lines += ["", f"## {run['tag']}, {run['threads']} thread(s): top operators by self CPU time (ms, calls)", "",
                  "| ours | ms | calls | open_clip | ms | calls |", "|---|---|---|---|---|---|"]
        for a, b in zip(run["ours"]["top_operators"], run["open_clip"]["top_operators"]):
            lines.append(f"| `{a['name'][:48]}` | {a['self_ms']:.1f} | {a['calls']} "
                         f"| `{b['name'][:48]}` | {b['self_ms']:.1f} | {b['calls']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from bench_pretrain import world_batch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["unicl_tiny", "unicl_small"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--tag", default="after", help="names the code state profiled (a run key in the file)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--steps", type=int, default=3, help="alternated steps timed by phase")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch intra-op thread counts")
    args = parser.parse_args()
    batch = world_batch(args.batch_size, args.image_size)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.presets:
        path = RESULTS / f"profile_{name}.json"
        report = json.loads(path.read_text()) if path.exists() else {"preset": name, "runs": {}}
        for threads in args.threads:
            torch.set_num_threads(threads)
            sides = profile_preset(name, batch, args.precision, args.top, args.steps)
            report["runs"][f"{args.tag} {threads}t"] = {"tag": args.tag, "threads": threads, "precision": args.precision,
                                                       "batch_size": args.batch_size, **provenance(), **sides}
        report.update(provenance())  # the file's date: its latest run's
        path.write_text(json.dumps(report, indent=2))
        path.with_suffix(".md").write_text(text := render(report))
        print(text)


if __name__ == "__main__":
    main()
