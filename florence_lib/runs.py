"""Run directories, seeding and metrics: the contract every command and notebook writes to.

A run directory holds::

    config.yaml      the resolved configuration
    meta.json        git commit, package versions, seed, host, command
    metrics.jsonl    one flat JSON object per logged step or evaluation
    tensorboard/     the same records as TensorBoard scalars, when the config says ``tensorboard: true``
    checkpoints/     safetensors weights + training state (see training/checkpoint.py)
    figures/         plots
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .config import dump_yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TRACKED_PACKAGES = (
    "torch", "torchvision", "timm", "transformers", "deepspeed", "numpy", "scikit-learn",
    "webdataset", "safetensors", "papermill", "florence_lib",
)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """The current commit (with ``-dirty`` when the tree has changes), or None outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment_report() -> dict[str, Any]:
    """What a reader needs to reproduce a number: versions, threads, devices."""
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "bf16_supported_cpu": _cpu_has_amx(),
        "packages": package_versions(),
    }


def _cpu_has_amx() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


class RunDir:
    """A run directory: resolved config, metadata, metrics log, checkpoints and figures."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._tensorboard: Any = None

    @classmethod
    def create(cls, root: str | Path = "runs", name: str | None = None) -> RunDir:
        return cls(Path(root) / (name or timestamp()))

    @property
    def checkpoints(self) -> Path:
        p = self.path / "checkpoints"
        p.mkdir(exist_ok=True)
        return p

    @property
    def figures(self) -> Path:
        p = self.path / "figures"
        p.mkdir(exist_ok=True)
        return p

    def sub(self, name: str) -> RunDir:
        """A nested run directory (e.g. one per notebook of a series)."""
        return RunDir(self.path / name)

    def write_config(self, cfg: Any) -> Path:
        p = self.path / "config.yaml"
        p.write_text(dump_yaml(cfg), encoding="utf-8")
        return p

    def write_meta(self, seed: int | None = None, **extra: Any) -> Path:
        meta = {
            "git_commit": git_commit(),
            "seed": seed,
            "host": platform.node(),
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "argv": sys.argv,
            "packages": package_versions(),
            **extra,
        }
        p = self.path / "meta.json"
        p.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        return p

    def start(self, cfg: Any, seed: int | None = None, **extra: Any) -> RunDir:
        """Record config and metadata; call once at the start of a command (on rank 0).

        A config with ``tensorboard: true`` also switches on TensorBoard events (:meth:`enable_tensorboard`).
        """
        self.write_config(cfg)
        self.write_meta(seed=seed, **extra)
        if getattr(cfg, "tensorboard", False):
            self.enable_tensorboard()
        return self

    def enable_tensorboard(self) -> Path:
        """Mirror every record :meth:`log` writes as TensorBoard scalars in ``tensorboard/`` (needs the
        ``tensorboard`` package: ``pip install 'florence_lib[tensorboard]'``)."""
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("tensorboard: true needs the tensorboard package; pip install "
                                  "'florence_lib[tensorboard]' (or set tensorboard=false)") from e
            self._tensorboard = SummaryWriter(log_dir=str(self.path / "tensorboard"), flush_secs=30)
        return self.path / "tensorboard"

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one flat metrics record to ``metrics.jsonl`` (and to TensorBoard, when enabled)."""
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(record), default=_json_default) + "\n")
        if self._tensorboard is not None:
            for tag, value, step in tensorboard_scalars(record):
                self._tensorboard.add_scalar(tag, value, step)

    def flush(self) -> None:
        """Write buffered TensorBoard events to disk (metrics.jsonl is written at once)."""
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def metrics(self) -> list[dict[str, Any]]:
        return list(read_metrics(self.path / "metrics.jsonl"))

    def save_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        p.write_text(json.dumps(obj, indent=2, default=_json_default), encoding="utf-8")
        return p

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def tensorboard_scalars(record: Mapping[str, Any]) -> list[tuple[str, float, int]]:
    """A record's numeric fields as ``(tag, value, step)``: tag ``<split>/<key>`` (``train/loss``), with the
    record's text fields (task, dataset; not the phase, whose curves continue each other) after the split."""
    step = int(record.get("step", 0) or 0)
    prefix = "/".join(str(v) for k, v in record.items() if isinstance(v, str) and k not in ("split", "phase"))
    split = record.get("split", "metrics")
    out = []
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            continue
        out.append(("/".join(p for p in (split, prefix, key) if p), float(value), step))
    return out


def read_metrics(path: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {i}: not valid JSON ({e.msg})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def notebook_run_dir(run_dir: str | Path | None, name: str) -> RunDir:
    """Where a notebook writes: ``<run_dir>/<name>`` under a series run, else ``runs/interactive/<name>`` (in the
    checkout; under the current directory for an installed copy)."""
    from .resources import interactive_runs_root

    base = Path(run_dir) if run_dir is not None else interactive_runs_root()
    return RunDir(base / name)


def data_root_or_none(data_root: str | Path | None = None) -> Path | None:
    """The real-data folder: the argument, else $FLORENCE_DATA_ROOT, else ``../shared/data``; None if absent."""
    candidates = [data_root, os.environ.get("FLORENCE_DATA_ROOT"), PROJECT_ROOT.parent / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None
