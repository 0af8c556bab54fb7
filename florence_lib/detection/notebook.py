"""What notebooks 08 and 09 start with: the profile's config, the UniCL tower, the output directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import load_config
from ..evaluation.evaluator import pretraining_checkpoint
from ..runs import RunDir, notebook_run_dir
from .config import DetectConfig


def notebook_config(notebook: str, *, profile: str, run_dir: str | Path | None, data_root: str | Path | None,
                    checkpoint: str | Path | None, seed: int, overrides: Sequence[str] = ()
                    ) -> tuple[DetectConfig, RunDir, str]:
    """(config, output dir, a label of the tower): the checkpoint given, else the one notebook 02 left in
    ``run_dir``, else none (a randomly initialised tower, labelled so)."""
    out = notebook_run_dir(run_dir, notebook)
    ckpt = checkpoint if checkpoint is not None else pretraining_checkpoint(run_dir)
    cfg = load_config(DetectConfig, command="detect", profile=profile, overrides=[f"seed={seed}", *overrides])
    cfg.checkpoint = str(ckpt) if ckpt is not None else None
    cfg.data.data_root = str(data_root) if data_root is not None else None
    label = f"UniCL {Path(ckpt).parent.parent.name}/{Path(ckpt).name}" if ckpt is not None else "untrained CoSwin"
    out.start(cfg, seed=seed)
    return cfg, out, label
