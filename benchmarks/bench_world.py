"""Rendering speed of the embedded world on one core: scenes per second at 64 px (target >= 2,000/s).

The reference, measured in the same run, is the least a renderer of such images must do: fill a 64 px PIL
image with a background, draw one ellipse and read it back into numpy. Ratios to it survive a faster or busier
machine; absolute rates are also written, with the machine's load average at the start (a shared 2-core box
with other jobs running reads slower than an idle one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from florence_lib.data.world import World, WorldConfig, WorldPairs

RESULTS = Path(__file__).parent / "results"


def rate(fn, n: int, repeats: int) -> float:
    """Best of ``repeats`` runs, in items per second of process CPU time (one thread)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, time.process_time() - t)
    return n / best


def reference(size: int):
    def draw(i: int) -> np.ndarray:
        img = Image.new("RGB", (size, size), (128, 128, 128))
        ImageDraw.Draw(img).ellipse((10, 10, 10 + i % 20, 30), fill=(220, 40, 40))
        return np.asarray(img)
    return draw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="scenes per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = World(WorldConfig(seed=0))
    load = os.getloadavg()[0]
    ref = rate(reference(64), args.n, args.repeats)
    rows = [{"what": "reference: PIL fill + 1 ellipse + numpy, 64 px", "per_s": ref}]
    for size in (32, 64, 128):
        rows.append({"what": f"scene clean {size} px", "per_s": rate(lambda i, s=size: world.scene("train", i, image_size=s),
                                                                     args.n, args.repeats)})
    for domain in world.domains[1:]:
        rows.append({"what": f"scene {domain} 64 px", "per_s": rate(lambda i, d=domain: world.scene("train", i, d),
                                                                   args.n // 2, args.repeats)})
    rows.append({"what": "clip (8 frames) 64 px", "per_s": rate(lambda i: world.clip("train", i), args.n // 8,
                                                                 args.repeats)})
    rows.append({"what": "layout only (no pixels)", "per_s": rate(lambda i: world.layout("train", i), args.n,
                                                                  args.repeats)})
    pairs = WorldPairs(world, "train", args.n)
    rows.append({"what": "WorldPairs item (render + tensor)", "per_s": rate(lambda i: pairs[i], args.n, args.repeats)})
    for r in rows:
        r["ratio_to_reference"] = r["per_s"] / ref
        print(f"{r['what']:<45} {r['per_s']:>10,.0f} /s  {r['ratio_to_reference']:6.3f} x reference")
    scene64 = next(r["per_s"] for r in rows if r["what"] == "scene clean 64 px")
    result = {
        "benchmark": "world", "target_scenes_per_s_64px": 2000, "scenes_per_s_64px": scene64,
        "meets_target": scene64 >= 2000, "rows": rows, "host": platform.node(), "cpu_count": os.cpu_count(),
        "load_average_at_start": load, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "timer": "process CPU time, best of repeats", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "world.json").write_text(json.dumps(result, indent=2))
    print(f"64 px clean scenes: {scene64:,.0f}/s (target 2,000/s) -> {RESULTS / 'world.json'}")


if __name__ == "__main__":
    main()
