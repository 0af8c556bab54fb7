"""What ``vl vqa`` and notebook 10 run: METER fine-tuned for VQA beside its two baselines, as flat records.

The question-only (blind) model is the same network, initialised the same way and trained with the same
schedule on the same questions, with every image replaced by zeros; the majority baseline answers each
question with its type's most frequent training answer. A model that learns from the image beats both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import load_config
from ..models.meter import METER
from ..runs import RunDir, notebook_run_dir
from .config import VLConfig
from .train import finetune_vqa, majority_baseline, setup, vqa_data, vqa_optim

SCORING = {True: "exact match after normalisation (one consensus answer per question)",
           False: "official VQA accuracy (10 annotators, leave-one-out)"}


def vqa_experiment(cfg: VLConfig, run_dir: RunDir, init: METER | None = None, label: str = "") -> dict[str, Any]:
    """Fine-tune (and test) METER, its blind twin and the majority baseline on ``cfg.vqa.dataset``.

    Returns ``{"record", "data", "model", "blind", "majority"}``; ``record`` is the metrics record
    ``{"task": "vqa", "dataset", "accuracy", "blind_accuracy", "majority_accuracy", "scoring", ...}``."""
    _, _, world = setup(cfg)
    data = vqa_data(cfg, world)
    init = init if cfg.vqa.pretrained else None  # vqa.pretrained false: a fresh fusion on the UniCL tower
    full = finetune_vqa(cfg, run_dir.sub(f"vqa_{data.name}"), data, init=init)
    blind = finetune_vqa(cfg, run_dir.sub(f"vqa_{data.name}_blind"), data, init=init, blind=True)
    majority = majority_baseline(data)
    m, b = full["metrics"], blind["metrics"]
    record: dict[str, Any] = {
        "task": "vqa", "dataset": data.name, "model": label, "accuracy": m["accuracy"],
        "blind_accuracy": b["accuracy"], "majority_accuracy": majority["accuracy"],
        "scoring": SCORING[data.exact], "num_train": len(data.train), "num_test": len(data.test),
        "num_answers": len(data.vocab), "steps": vqa_optim(cfg, data).steps, "vl_pretrained": init is not None,
        **{k: v for k, v in m.items() if k != "accuracy"},
        **{f"blind_{k}": v for k, v in b.items() if k != "accuracy"},
        **{f"majority_{k}": v for k, v in majority.items() if k != "accuracy"},
    }
    return {"record": record, "data": data, "model": full, "blind": blind, "majority": majority}


def notebook_config(notebook: str, *, profile: str, run_dir: str | Path | None, data_root: str | Path | None,
                    checkpoint: str | Path | None, seed: int, overrides: tuple[str, ...] = ()
                    ) -> tuple[VLConfig, RunDir, str]:
    """Notebook 10's start: the profile's VLConfig, the UniCL checkpoint (given, else notebook 02's, else none:
    a randomly initialised image encoder, labelled so) and the notebook's output directory."""
    from ..evaluation.evaluator import pretraining_checkpoint
    from ..training.checkpoint import resolve_checkpoint

    out = notebook_run_dir(run_dir, notebook)
    ckpt = checkpoint if checkpoint is not None else pretraining_checkpoint(run_dir)
    cfg = load_config(VLConfig, command="vl", profile=profile, overrides=[f"seed={seed}", *overrides])
    cfg.unicl_checkpoint = str(ckpt) if ckpt is not None else None
    cfg.data_root = str(data_root) if data_root is not None else None
    out.start(cfg, seed=seed)
    label = f"METER ({cfg.model}) on UniCL {resolve_checkpoint(ckpt).name}" if ckpt else f"METER ({cfg.model}), untrained image tower"
    return cfg, out, label
