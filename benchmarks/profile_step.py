"""Where a pretraining step's time goes: torch.profiler over one full UniCL training step per preset.

One warm-up step, then one profiled step (forward, loss, backward, clip, AdamW) on the same world batch as
bench_pretrain.py. Writes the top operators by self CPU time to ``results/profile_<preset>_<tag>.md`` (the tag
names the code state, e.g. ``before``/``after`` a change), and the share of the step in the image tower, the text
tower and the optimizer.

    python benchmarks/profile_step.py [--presets unicl_tiny unicl_small] [--tag after] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from florence_lib.models import create_model
from florence_lib.training.objectives import ContrastiveObjective

RESULTS = Path(__file__).parent / "results"


def profile_preset(name: str, batch: dict, precision: str, top: int) -> str:
    from bench_pretrain import engine_for

    torch.manual_seed(0)
    engine = engine_for(create_model(name), ContrastiveObjective("clip"), precision)
    engine.train_step(batch)  # warm-up: caches, allocator, oneDNN primitives
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        engine.train_step(batch)
        seconds = time.perf_counter() - t
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48)
    return (f"## {name} ({precision}, batch {len(batch['image'])}, {torch.get_num_threads()} threads, "
            f"step {seconds:.3f} s under profiling, load average {os.getloadavg()[0]:.1f})\n\n```\n{table}\n```\n")


def main() -> None:
    from bench_pretrain import world_batch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["unicl_tiny", "unicl_small"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--tag", default="after", help="names the code state profiled (results file suffix)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = world_batch(args.batch_size, args.image_size)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.presets:
        text = (f"# Profile of one training step: {name}, {args.tag} ({os.uname().nodename}, "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
                + profile_preset(name, batch, args.precision, args.top))
        (RESULTS / f"profile_{name}_{args.tag}.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
