"""CoSwin image tower at a git revision (before) vs the working tree (after), in one process, same weights.

Loads ``florence_lib/models/coswin.py`` as it was at ``--ref`` next to today's, gives both the same state dict,
checks their outputs agree, then times forward + backward (train mode, ``square().mean()`` loss) of each in
turn (ABAB, so load on a shared machine hits both alike) and reports the medians and the speedup.

    python benchmarks/bench_coswin_ab.py [--ref main] [--repeats 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from provenance import headline, provenance

from florence_lib.models import coswin as after_module
from florence_lib.models.presets import IMAGE_ENCODERS

ROOT = Path(__file__).parents[1]
RESULTS = Path(__file__).parent / "results"
CASES = (("coswin_tiny", 32, 64), ("coswin_small", 32, 64))


def module_at(ref: str):
    """``coswin.py`` as it was at git ``ref``, imported as a separate module."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:florence_lib/models/coswin.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "coswin_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("coswin_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["coswin_before"] = module
    spec.loader.exec_module(module)
    return module


def step_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    t = time.perf_counter()
    model(x).square().mean().backward()
    return time.perf_counter() - t


def compare(before_module, preset: str, batch: int, size: int, repeats: int) -> dict:
    cfg = IMAGE_ENCODERS.create(preset, drop_path_rate=0.0)
    torch.manual_seed(0)
    after = after_module.CoSwin.from_config(cfg)
    before = before_module.CoSwin.from_config(cfg)
    before.load_state_dict(after.state_dict())
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        diff = (after.eval()(x) - before.eval()(x)).abs().max().item()
    after.train(), before.train()
    times: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(repeats + 1):
        for name, model in (("before", before), ("after", after)):
            seconds = step_seconds(model, x)
            if i:  # the first round warms caches and oneDNN primitives
                times[name].append(seconds)
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    return {"tower": preset, "batch": batch, "image_size": size, "before_s": b, "after_s": a, "speedup": b / a,
            "max_abs_output_difference": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="git revision of the 'before' coswin.py")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--name", default="coswin_ab")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = module_at(args.ref)
    ref = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.ref], capture_output=True, text=True,
                         check=True).stdout.strip()
    rows = [compare(before, *case, args.repeats) for case in CASES]
    report = {**provenance(), "ref": args.ref, "ref_commit": ref, "threads": 1, "repeats": args.repeats,
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    lines = [f"# CoSwin image tower, {args.ref} ({ref}) vs this tree ({headline(report)})", "",
             f"Forward + backward, train mode, 1 thread, median of {args.repeats} alternated repeats.", "",
             "| tower | input | before s | after s | speedup | max output difference |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['tower']} | {r['batch']} x {r['image_size']} px | {r['before_s']:.3f} | {r['after_s']:.3f} | "
              f"{r['speedup']:.2f}x | {r['max_abs_output_difference']:.1e} |" for r in rows]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
