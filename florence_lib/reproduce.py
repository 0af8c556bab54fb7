"""The main job: execute every ``notebooks/NN_*.ipynb`` in numeric order through papermill (``--jobs`` at once,
each after the notebooks it reads).

``python -m florence_lib.reproduce --profile quick`` (what ``make reproduce`` runs) writes the executed notebooks,
each notebook's outputs (metrics JSON, figures, checkpoints) and a ``summary.json`` into ``runs/<timestamp>/``.
A failing notebook stops the series with the notebook and cell named.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, TextIO

from .config import PROFILES
from .runs import PROJECT_ROOT, RunDir, data_root_or_none, timestamp

NOTEBOOK_NAME = re.compile(r"^(\d\d)([a-z]?)_[a-z0-9_]+\.ipynb$")


def list_notebooks(folder: Path = PROJECT_ROOT / "notebooks") -> list[Path]:
    """``NN_name.ipynb`` files in numeric order (``00`` < ``00b`` < ``01``)."""
    found = [p for p in folder.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name)]
    return sorted(found, key=lambda p: p.name)


class PrefixedWriter:
    """A text stream that writes each line of what it is given to ``stream`` behind ``prefix``."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream, self.prefix, self._partial = stream, prefix, ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.stream.write(f"{self.prefix}{line}\n")
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def run_notebook(nb: Path, run_dir: RunDir, parameters: dict[str, Any], kernel_name: str | None = None,
                 cell_bar: bool = True) -> dict[str, Any]:
    """Execute one notebook into ``run_dir``: its summary entry (status, seconds, metrics, or the failed cell)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out = run_dir.path / nb.name
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"notebook": nb.name, "output": str(out)}
    try:
        # What the notebook prints streams to the terminal, prefixed with its number; the cell bar (one
        # notebook at a time only) shows where it is. The kernel's start-up warning about unencrypted loopback
        # TCP is silenced.
        pm.execute_notebook(str(nb), str(out), parameters=parameters, cwd=str(nb.parent), kernel_name=kernel_name,
                            progress_bar={"desc": f"  {nb.stem} cells", "leave": False} if cell_bar else False,
                            stdout_file=PrefixedWriter(sys.stdout, f"  {nb.stem[:3]}| "),
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except PapermillExecutionError as e:
        return {**entry, "status": "failed", "cell": e.cell_index, "error": f"{e.ename}: {e.evalue}"}
    entry.update(status="ok", seconds=round(time.perf_counter() - t0, 1))
    metrics = run_dir.path / nb.stem / "metrics.json"
    if metrics.is_file():
        entry["metrics"] = json.loads(metrics.read_text())
    return entry


def run_series(
    notebooks: list[Path],
    run_dir: RunDir,
    parameters: dict[str, Any],
    kernel_name: str | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Execute ``notebooks`` with ``parameters`` into ``run_dir``; after a failure nothing new starts.

    ``jobs`` > 1 runs that many notebooks at once, each as soon as the notebooks it reads
    (``series.prerequisites``) are done, the one heading the longest chain first (``series.critical_paths``;
    series order breaks ties; with one job, series order); each kernel then gets ``cores / jobs`` threads
    (``OMP_NUM_THREADS``), so that two kernels do not fight over the cores. Each notebook is driven from its own
    (spawned) process, so that two papermill clients share no state (papermill and its kernel client are not
    documented as thread-safe). The summary keeps series order."""
    from .series import critical_paths, prerequisites

    stems = [nb.stem for nb in notebooks]
    waits = prerequisites(stems)
    longest = critical_paths(stems)
    # one at a time: numeric order (the total is the same); several: longest chain first, stable among equals
    by_priority = sorted(stems, key=lambda s: -longest[s]) if jobs > 1 else stems
    by_stem = dict(zip(stems, notebooks))
    summary: dict[str, Any] = {"parameters": parameters, "notebooks": [], "jobs": jobs}
    entries: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    threads = os.environ.get("OMP_NUM_THREADS")
    if jobs > 1 and threads is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))  # inherited by each kernel
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            running: dict[Future, str] = {}
            while True:
                failed = any(e["status"] == "failed" for e in entries.values())
                started = set(entries) | set(running.values())
                ready = [s for s in by_priority if s not in started and waits[s] <= set(entries)
                         and all(entries[w]["status"] == "ok" for w in waits[s])]
                while not failed and ready and len(running) < jobs:
                    stem = ready.pop(0)
                    print(f"[{len(started) + 1}/{len(stems)}] {stem}.ipynb", flush=True)
                    started.add(stem)
                    running[pool.submit(run_notebook, by_stem[stem], run_dir, parameters, kernel_name,
                                        jobs == 1)] = stem
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    entry = entries[running.pop(future)] = future.result()
                    if entry["status"] == "ok":
                        print(f"  {Path(entry['notebook']).stem}: ok in {entry['seconds']:.0f} s", flush=True)
    finally:
        if jobs > 1 and threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    summary["notebooks"] = [entries[s] for s in stems if s in entries]
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    failed = [e for e in summary["notebooks"] if e["status"] == "failed"]
    if failed:
        summary["failed"] = failed[0]
    run_dir.save_json("summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m florence_lib.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument("--run-dir", default=None, help="default: runs/<timestamp>")
    parser.add_argument("--data-root", default=None,
                        help="real data (default: $FLORENCE_DATA_ROOT, else ../shared/data when present)")
    parser.add_argument("--only", nargs="*", default=None, help="notebook name prefixes to run, e.g. 00 02")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=None,
                        help="notebooks at once, each when the ones it reads are done (default: 2 where there are "
                             ">= 2 cores, else 1)")
    args = parser.parse_args(argv)

    run_dir = RunDir(args.run_dir) if args.run_dir else RunDir.create(PROJECT_ROOT / "runs", timestamp())
    notebooks = list_notebooks()
    if args.only:
        notebooks = [p for p in notebooks if any(p.name.startswith(o) for o in args.only)]
    data_root = data_root_or_none(args.data_root)  # None -> notebooks use only the embedded world
    parameters = {"profile": args.profile, "run_dir": str(run_dir.path.resolve()), "seed": args.seed,
                  "data_root": str(data_root) if data_root else None}
    run_dir.write_meta(seed=args.seed, profile=args.profile, notebooks=[p.name for p in notebooks])
    print(f"running {len(notebooks)} notebooks into {run_dir.path}", flush=True)
    jobs = args.jobs if args.jobs is not None else min(2, os.cpu_count() or 1)
    summary = run_series(notebooks, run_dir, parameters, jobs=max(1, jobs))
    failed = summary.get("failed")
    if failed:
        print(f"FAILED: {failed['notebook']} cell {failed['cell']}: {failed['error']}\n"
              f"executed notebook with the traceback: {failed['output']}", file=sys.stderr)
        return 1
    print(f"done in {summary['seconds'] / 60:.1f} min: executed notebooks, metrics and figures in {run_dir.path}")
    report = run_dir.path / "report.html"
    if report.is_file():
        print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
