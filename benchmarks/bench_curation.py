"""Curation throughput per stage, and the two global stages at scale: MinHash caption grouping (1M captions)
and near-duplicate image search (100k hashes), each within 8 GiB and growing near-linearly (10x data <= 12x time);
and the near-duplicate check's error rates on a constructed set with known answers (distinct world scenes, COCO
photos where the real data is there; resized / JPEG q35 / 4%-cropped / brightened copies): pHash alone against
pHash + the thumbnail check (issue 11's target: <= 1% of distinct images dropped, >= 90% of edits caught).

Times are process CPU seconds (a busy shared machine slows wall time, not CPU time), with wall time alongside.
Each scale runs in a fresh child process so that its peak RSS is its own. The per-stage reference, measured in
the same run, is decoding the same PNG files: ratios to it survive a faster or slower machine.

    python benchmarks/bench_curation.py [--captions 100000 1000000] [--hashes 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from provenance import headline, provenance

from florence_lib.curation.config import CurateConfig
from florence_lib.curation.dedup import Deduplicator, near_identical_groups, phash
from florence_lib.curation.dirt import duplicate_rates, write_dirty_pairs
from florence_lib.curation.filters import (
    count_tokens,
    identify_language,
    image_reason,
    is_boilerplate,
    normalize_caption,
)
from florence_lib.curation.inputs import iter_pairs
from florence_lib.curation.pipeline import curate
from florence_lib.data.world import World, WorldConfig
from florence_lib.runs import data_root_or_none

RESULTS = Path(__file__).parent / "results"
WORDS = ("a the of on with and in at red blue green small large circle square star left right top bottom photo "
         "picture").split() + [f"word{k}" for k in range(20_000)]
"""Frequent function words first, then a long tail: drawn with a Zipf law, like web caption vocabulary."""


def synthetic_captions(n: int, seed: int = 0) -> list[str]:
    """Web-like caption mix: mostly distinct 8-20 word captions, 10% near-identical edits of earlier ones."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for i in range(n):
        if i > 10 and rng.random() < 0.1:
            words = out[int(rng.integers(i))].split()
            words[int(rng.integers(len(words)))] = WORDS[int(rng.integers(len(WORDS)))]
            out.append(" ".join(words))
        else:
            ranks = (rng.zipf(1.3, int(rng.integers(8, 21))) - 1) % len(WORDS)
            out.append(" ".join(WORDS[j] for j in ranks))
    return out


def synthetic_hashes(n: int, seed: int = 0) -> np.ndarray:
    """64-bit codes, 10% of them within 6 bits of an earlier one (near duplicates)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    dup = np.flatnonzero(rng.random(n) < 0.1)
    dup = dup[dup > 0]
    bits = np.unpackbits(codes[rng.integers(0, dup)], axis=1)
    for row, flips in zip(bits, rng.integers(0, 64, (len(dup), 6))):
        row[flips] ^= 1
    codes[dup] = np.packbits(bits, axis=1)
    return codes


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def child(task: str, n: int) -> dict:
    """One measurement in this (fresh) process."""
    if task == "minhash":
        data = synthetic_captions(n)
        t, w = time.process_time(), time.perf_counter()
        groups = near_identical_groups(data, threshold=0.8, num_perm=128, progress=False)
        result = {"merged": int((groups != np.arange(n)).sum())}
    else:
        data = synthetic_hashes(n)
        dedup = Deduplicator(radius=10)
        t, w = time.process_time(), time.perf_counter()
        found = 0
        for i in range(0, n, 256):
            found += sum(d is not None for d in dedup.assign(data[i:i + 256], list(range(i, min(n, i + 256)))))
        result = {"duplicates": found}
    return {"task": task, "n": n, "cpu_s": time.process_time() - t, "wall_s": time.perf_counter() - w,
            "peak_rss_gib": peak_rss_gib(), **result}


def run_child(task: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", task, str(n)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def stage_throughput(rows: int) -> dict:
    """Rows per CPU second of each per-row stage on dirty world pairs, and of the whole pipeline."""
    world = World(WorldConfig())
    n = rows * 4 // 5
    scenes = [world.scene("train", i, image_size=128) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        return _stage_throughput(Path(tmp), scenes, rows)


def _stage_throughput(tmp: Path, scenes: list, rows: int) -> dict:
    dirty = write_dirty_pairs(tmp / "in", [s.image for s in scenes], [s.captions[2] for s in scenes],
                              {"resized": rows // 20, "jpeg": rows // 20, "non_english": rows // 20,
                               "corrupt": rows // 20})
    pairs = list(iter_pairs(dirty.csv))
    identify_language("warm up", ["en"])  # load langid's model outside the timed loops

    def timed(fn, items) -> float:
        t = time.process_time()
        out = [fn(x) for x in items]
        return len(items) / max(time.process_time() - t, 1e-9), out

    def decode(p):
        try:
            with Image.open(p.open()) as img:
                img.load()
                return img.convert("RGB")
        except OSError:
            return None

    ref, decoded = timed(decode, pairs)
    images = [im for im in decoded if im is not None]
    stages = {
        "decode (reference)": ref,
        "validate size/aspect": timed(lambda im: image_reason(im, 32, 3.0), images)[0],
        "caption repair+tokens+boilerplate": timed(
            lambda p: is_boilerplate(normalize_caption(p.caption)) or count_tokens(p.caption), pairs)[0],
        "language id (langid)": timed(lambda p: identify_language(p.caption, ["en"]), pairs)[0],
        "pHash 64-bit": timed(phash, images)[0],
    }
    codes = np.stack([phash(im) for im in images])
    t = time.process_time()
    Deduplicator(10).assign(codes, list(range(len(codes))))
    stages["near-duplicate search"] = len(codes) / max(time.process_time() - t, 1e-9)
    t = time.process_time()
    curate(dirty.csv, tmp / "out", CurateConfig(), card=False, progress=False)
    stages["whole pipeline (scan+labels+shards+manifest)"] = len(pairs) / (time.process_time() - t)
    return {"rows": len(pairs), "rows_per_cpu_s": stages,
            "ratio_to_decode": {k: v / ref for k, v in stages.items()}}


def dedup_error_rates(world_scenes: int = 300, photos: int = 200, edits: int = 150) -> dict:
    """False-drop and catch rates of pHash alone and with the fine check, on distinct images with known edits."""
    world = World(WorldConfig(seed=11))
    images = [Image.fromarray(world.scene("train", i, image_size=96).image) for i in range(world_scenes)]
    root = data_root_or_none()
    coco = sorted((root / "coco" / "val2017").glob("*.jpg"))[:photos] if root is not None else []
    images += [Image.open(f).convert("RGB") for f in coco]
    out = {"images": len(images), "world_scenes": world_scenes, "coco_photos": len(coco)}
    for name, threshold in (("phash_only", None), ("phash_and_thumbnail_0.9", 0.9)):
        out[name] = duplicate_rates(images, lambda t=threshold: Deduplicator(10, 64, t), edits_per_kind=edits)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("TASK", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=400, help="rows for the per-stage throughput")
    parser.add_argument("--captions", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--hashes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--keep-minhash", action="store_true",
                        help="reuse results/curation.json's MinHash runs (they take ~10 minutes) instead of rerunning")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    report = {**provenance(), "machine": {"platform": platform.platform(terse=True), "cpus": os.cpu_count(),
                                          "load_avg_at_start": os.getloadavg()},
              "stages": stage_throughput(args.rows),
              "dedup_error_rates": dedup_error_rates(),
              "minhash": (json.loads((RESULTS / "curation.json").read_text())["minhash"] if args.keep_minhash
                          else [run_child("minhash", n) for n in args.captions]),
              "image_dedup": [run_child("dedup", n) for n in args.hashes]}
    for key in ("minhash", "image_dedup"):
        runs = report[key]
        report[f"{key}_scaling"] = [{"from": a["n"], "to": b["n"], "data_ratio": b["n"] / a["n"],
                                     "cpu_time_ratio": b["cpu_s"] / a["cpu_s"]} for a, b in zip(runs, runs[1:])]
    RESULTS.mkdir(exist_ok=True)
    report["minhash_reused"] = bool(args.keep_minhash)
    (RESULTS / "curation.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Curation benchmark ({headline(report)})", "", f"Machine: {report['machine']}", "",
             f"## Per-stage throughput ({report['stages']['rows']} dirty world rows, 128 px)", "",
             "| stage | rows / CPU s | ratio to PNG decode |", "|---|---|---|"]
    lines += [f"| {k} | {v:,.0f} | {report['stages']['ratio_to_decode'][k]:.2f} |"
              for k, v in report["stages"]["rows_per_cpu_s"].items()]
    rates = report["dedup_error_rates"]
    lines += ["", f"## Near-duplicate errors ({rates['images']} distinct images: {rates['world_scenes']} world scenes, "
              f"{rates['coco_photos']} COCO photos; 64-bit pHash, radius 10)", "",
              "| check | distinct dropped | caught (all) | resize | JPEG q35 | 4% crop | brightness |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {r['distinct_dropped']:.1%} | {r['caught']:.1%} | {r['caught_resize']:.1%} | "
              f"{r['caught_jpeg_q35']:.1%} | {r['caught_crop_4pct']:.1%} | {r['caught_brightness']:.1%} |"
              for k, r in rates.items() if isinstance(r, dict)]
    for key, what in (("minhash", "MinHash LSH caption grouping"), ("image_dedup", "near-duplicate image search")):
        reused = " (reused from the previous results file: --keep-minhash)" if key == "minhash" and args.keep_minhash else ""
        lines += ["", f"## {what}{reused}", "", "| n | CPU s | wall s | peak RSS GiB |", "|---|---|---|---|"]
        lines += [f"| {r['n']:,} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} |"
                  for r in report[key]]
        lines += [f"\n{s['data_ratio']:.0f}x data -> {s['cpu_time_ratio']:.2f}x CPU time" for s in report[f"{key}_scaling"]]
    (RESULTS / "curation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
