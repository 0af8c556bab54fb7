"""``python -m florence_lib video train|evaluate|retrieval``: the Video CoSwin adapter -> metrics JSON.

    python -m florence_lib video train --checkpoint runs/x/checkpoints --profile quick
    python -m florence_lib video train --set model.init=scratch            # the from-scratch baseline
    python -m florence_lib video evaluate --recognizer runs/video-train/checkpoints
    python -m florence_lib video retrieval --checkpoint runs/x/checkpoints
    python -m florence_lib video train --set data.dataset=csv data.csv=train.csv data.test_csv=val.csv

``train`` fine-tunes an inflated (or scratch) Video CoSwin on action clips, checkpoints it in the run
directory (a rerun on the same ``--run-dir`` resumes) and tests it multi-view; ``evaluate`` tests a saved
recognizer; ``retrieval`` runs zero-shot text-to-video retrieval (inflated 3D tower and the frame-mean
baseline). Each writes ``config.yaml``, ``meta.json``, appends its records to ``metrics.jsonl`` and writes them
to ``<action>_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json

from ..cli import print_dry_run, resolve_config
from ..runs import RunDir
from .config import VideoConfig

HELP = "Video CoSwin (paper Tables 9-10): action recognition train/evaluate, zero-shot text-video retrieval"
ACTIONS = ("train", "evaluate", "retrieval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, nargs="?", default="train", help="what to run (default: train)")
    parser.add_argument("--checkpoint", help="UniCL checkpoint dir, weights file or run dir (default: untrained)")
    parser.add_argument("--recognizer", help="evaluate: action recognizer checkpoint saved by 'video train'")


def main(args: argparse.Namespace) -> int:
    if args.checkpoint is not None:
        args.overrides = [f"checkpoint={args.checkpoint}", *args.overrides]  # an explicit --set wins
    cfg = resolve_config(args, VideoConfig, "video")
    if args.action == "evaluate" and not args.recognizer:
        raise SystemExit("florence_lib: error: video evaluate needs --recognizer CHECKPOINT")
    if args.dry_run:
        return print_dry_run(cfg)
    from .adapter import VideoAdapter  # torch and the models: only when there is work to do

    run_dir = RunDir(args.run_dir) if args.run_dir else RunDir.create(name=f"video-{args.action}")
    run_dir.start(cfg, seed=cfg.seed, action=args.action)
    adapter = VideoAdapter(cfg)
    if args.action == "train":
        result = adapter.action_recognition(run_dir=run_dir)
    elif args.action == "evaluate":
        result = adapter.evaluate_recognizer(args.recognizer)
    else:
        result = adapter.retrieval()
    for record in result.records:
        run_dir.log(record)
    path = run_dir.save_json(f"{args.action}_{cfg.data.dataset}.json", result.records)
    print(json.dumps(result.records, indent=2, default=str))
    print(f"metrics written to {path}")
    return 0
