"""Does data loading bound training? The streamed shard reader (``data.sources`` kind ``shards``) with DataLoader
workers against the training step rate of ``unicl_tiny`` at 64 px, both measured in this run.

The shards hold world scenes rendered at 128 px and stored as JPEG (what ``curate`` writes for photos); the
reader decodes, crops to 64 px, tokenizes and collates exactly as ``pretrain`` does. The training reference runs
the same batch size with one torch thread (the quick profile's setting). Target: reader >= 2x the step rate.

    python benchmarks/bench_data.py [--workers 2] [--batch 64] [--samples 1536]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from provenance import headline, provenance

from florence_lib.data.mixing import MixCollate, open_sources
from florence_lib.data.shards import write_shards
from florence_lib.data.sources import SourceConfig
from florence_lib.data.stream import MixedStream
from florence_lib.data.tokenizer import Tokenizer
from florence_lib.data.transforms import train_transform
from florence_lib.data.world import World, WorldConfig
from florence_lib.models import create_model
from florence_lib.training.batches import PairCollate
from florence_lib.training.engine import Engine
from florence_lib.training.objectives import ContrastiveObjective
from florence_lib.training.optim import build_optimizer
from florence_lib.training.schedules import build_scheduler

RESULTS = Path(__file__).parent / "results"


def make_shards(folder: Path, n: int) -> Path:
    world = World(WorldConfig(seed=0))

    def samples():
        for i in range(n):
            scene = world.scene("train", i, image_size=128)
            yield {"key": f"{i:08d}", "image": Image.fromarray(scene.image), "caption": scene.captions[2], "label": i}

    write_shards(samples(), folder, max_count=128)
    return folder


def reader_rate(shards: Path, workers: int, batch: int, batches: int) -> float:
    """Images per second the streamed reader delivers (after the first batch of each worker)."""
    transform = train_transform(64)
    parts = open_sources([SourceConfig("shards", str(shards))], transform, world=lambda: None)
    stream = MixedStream(parts, transform, seed=0, shuffle_buffer=256)
    loader = torch.utils.data.DataLoader(stream, batch_size=batch, num_workers=workers,
                                         collate_fn=MixCollate(PairCollate(Tokenizer())))
    it = iter(loader)
    for _ in range(max(1, workers)):
        next(it)
    t = time.perf_counter()
    n = sum(len(next(it)["label"]) for _ in range(batches))
    return n / (time.perf_counter() - t)


def train_rate(batch: int, steps: int, threads: int) -> float:
    """Images per second of unicl_tiny training steps at 64 px on fixed batches."""
    torch.set_num_threads(threads)
    model = create_model("unicl_tiny")
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.1)
    engine = Engine(model, ContrastiveObjective(), opt, build_scheduler(opt, warmup_steps=1, total_steps=steps + 2),
                    device=torch.device("cpu"))
    tokens = Tokenizer()(["a red circle at the top left"] * batch)
    data = {"image": torch.randn(batch, 3, 64, 64), "label": torch.arange(batch), **tokens}
    engine.train_step(data)  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        engine.train_step(data)
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1536)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp) / "shards", args.samples)
        batches = args.samples // args.batch - args.workers - 1
        reader = reader_rate(shards, args.workers, args.batch, batches)
        reader_one = reader_rate(shards, 0, args.batch, batches // 2)
    train = train_rate(args.batch, args.steps, args.threads)
    report = {**provenance(), "machine": {"platform": platform.platform(terse=True), "cpus": os.cpu_count(),
                          "load_avg_at_start": os.getloadavg(), "torch": torch.__version__},
              "batch": args.batch, "image_size": 64, "workers": args.workers,
              "reader_images_per_s": reader, "reader_in_process_images_per_s": reader_one,
              "train_images_per_s": train, "train_threads": args.threads,
              "reader_over_train": reader / train, "target": 2.0}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Data loading vs training (streamed shards, unicl_tiny at 64 px) ({headline(report)})", "", f"Machine: {report['machine']}",
             "", "| what | images / s |", "|---|---|",
             f"| shard reader, {args.workers} workers | {reader:,.0f} |",
             f"| shard reader, in the training process | {reader_one:,.0f} |",
             f"| unicl_tiny training steps, {args.threads} thread(s), batch {args.batch} | {train:,.0f} |",
             "", f"reader / training = {reader / train:.1f}x (target >= 2x)"]
    (RESULTS / "data.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
