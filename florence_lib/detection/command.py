"""``python -m florence_lib detect train|evaluate|zero-shot``: the Dynamic Head adapter (Tables 6 and 7).

    python -m florence_lib detect train --profile quick --checkpoint runs/x/checkpoints   # UniCL tower
    python -m florence_lib detect train --dataset coco --data-root ../shared/data
    python -m florence_lib detect evaluate --detector runs/detect-train               # a trained detector
    python -m florence_lib detect zero-shot --profile quick --checkpoint runs/x/checkpoints

``train`` resumes from the newest checkpoint in ``--run-dir``. Each action writes ``config.yaml``, ``meta.json``,
its flat metrics records to ``metrics.jsonl`` and ``<action>.json``, and the detections as COCO results JSON.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..cli import print_dry_run, resolve_config
from ..runs import RunDir
from .config import DetectConfig

HELP = "Dynamic Head detection (paper Tables 6-7): train, evaluate, zero-shot"
ACTIONS = ("train", "evaluate", "zero-shot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--checkpoint", help="UniCL checkpoint supplying the CoSwin tower (and the text tower)")
    parser.add_argument("--dataset", help="world, coco or merged")
    parser.add_argument("--data-root", help="folder of the real sets (holding coco/)")
    parser.add_argument("--detector", help="evaluate: a trained detector's checkpoint or run dir")


def detection_record(dataset: str, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The flat record of Table 6 (``per_class_AP`` flattened to ``AP_<class>``)."""
    flat = {k: v for k, v in metrics.items() if k != "per_class_AP"}
    flat.update({f"AP_{name}": v for name, v in metrics.get("per_class_AP", {}).items()})
    return {"task": "detection", "dataset": dataset, **flat, **extra}


def main(args: argparse.Namespace) -> int:
    shorthands = [f"{key}={value}" for key, value in
                  (("checkpoint", args.checkpoint), ("data.dataset", args.dataset),
                   ("data.data_root", args.data_root)) if value is not None]
    args.overrides = [*shorthands, *args.overrides]
    cfg = resolve_config(args, DetectConfig, "detect")
    if args.action == "evaluate" and args.detector is None:
        raise SystemExit("florence_lib: error: detect evaluate needs --detector (a trained detector)")
    if args.dry_run:
        return print_dry_run(cfg)
    run_dir = RunDir(args.run_dir) if args.run_dir else RunDir.create(name=f"detect-{args.action}")
    if args.action == "train":
        from .train import train_detector

        results = train_detector(cfg, run_dir)
        records = [detection_record(cfg.data.dataset, {k: v for k, v in results.items() if k != "checkpoint"},
                                    checkpoint=results["checkpoint"])]
    elif args.action == "evaluate":
        from ..training.engine import resolve_device
        from .train import _sources, evaluate_detector, load_detector

        run_dir.start(cfg, seed=cfg.seed, command="detect evaluate", detector=args.detector)
        device = resolve_device(cfg.device)
        _, test = _sources(cfg, "shape")
        metrics = evaluate_detector(load_detector(args.detector, device), test, cfg.data.image_size,
                                    cfg.data.eval_images, device, run_dir.path / "detections_test.json")
        records = [detection_record(cfg.data.dataset, metrics, detector=args.detector)]
    else:
        from .zero_shot import run_zero_shot

        run_dir.start(cfg, seed=cfg.seed, command="detect zero-shot")
        result = run_zero_shot(cfg, run_dir)
        m = result["metrics"]
        records = [{**{k: v for k, v in m.items() if k != "per_class_AP"},
                    **{f"AP_{n}": v for n, v in m["per_class_AP"].items()}}]
    for record in records:
        run_dir.log(record)
    path = run_dir.save_json(f"{args.action.replace('-', '_')}.json", records)
    print(json.dumps(records, indent=2, default=str))
    print(f"metrics written to {path}")
    return 0
