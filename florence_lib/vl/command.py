"""``python -m florence_lib vl pretrain|vqa|caption``: METER's vision-language pretraining, VQA, captioning.

    python -m florence_lib vl pretrain --profile quick --unicl-checkpoint runs/x/checkpoints
    python -m florence_lib vl vqa --profile quick --checkpoint runs/vl-pretrain/checkpoints
    python -m florence_lib vl vqa --set vqa.dataset=vqav2 --data-root ../shared/data
    python -m florence_lib vl caption --profile quick --dataset coco --data-root ../shared/data

``pretrain`` writes a METER checkpoint to ``<run-dir>/checkpoints``; ``vqa`` fine-tunes it (or a fresh METER
on the UniCL image tower when ``--checkpoint`` is absent) beside its blind and majority baselines and writes
``vqa_<dataset>.json``; ``caption`` trains a decoder on the fused features and writes ``captioning_<dataset>.json``
(BLEU-4 and CIDEr-D of beam search; greedy beside it).
"""

from __future__ import annotations

import argparse
import json

from ..cli import print_dry_run, resolve_config
from ..runs import RunDir
from .config import VLConfig

HELP = "METER vision-language adapter (paper §2.5, Table 8): pretrain (MLM + ITM), vqa, caption"
TASKS = ("pretrain", "vqa", "caption")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=TASKS, help="which stage to run")
    parser.add_argument("--unicl-checkpoint", help="UniCL checkpoint whose image encoder METER starts from")
    parser.add_argument("--checkpoint", help="VL-pretrained METER checkpoint (vqa)")
    parser.add_argument("--data-root", help="folder of the real data (../shared/data) for vqav2 / coco")
    parser.add_argument("--dataset", choices=("world", "coco"), default="world", help="captioning data")


def main(args: argparse.Namespace) -> int:
    shorthands = [f"{key}={value}" for key, value in (("unicl_checkpoint", args.unicl_checkpoint),
                                                      ("checkpoint", args.checkpoint), ("data_root", args.data_root))
                  if value is not None]
    args.overrides = [*shorthands, *args.overrides]
    cfg = resolve_config(args, VLConfig, "vl")
    if args.dry_run:
        return print_dry_run(cfg)
    from .experiment import vqa_experiment
    from .train import load_vl_checkpoint, pretrain

    run_dir = RunDir(args.run_dir) if args.run_dir else RunDir.create(name=f"vl-{args.task}")
    run_dir.start(cfg, seed=cfg.seed, task=args.task)
    if args.task == "pretrain":
        _, records = pretrain(cfg, run_dir)
        print(json.dumps([r for r in records if r.get("split") == "val"][-1:], indent=2, default=str))
        print(f"checkpoint written to {run_dir.checkpoints}")
        return 0
    init = load_vl_checkpoint(cfg.checkpoint).meter if cfg.checkpoint else None
    if args.task == "caption":
        from .captioning import train_captioner

        record = train_captioner(cfg, run_dir, args.dataset, init)["record"]
        run_dir.log(record)
        path = run_dir.save_json(f"captioning_{args.dataset}.json", [record])
        print(json.dumps(record, indent=2, default=str))
        print(f"metrics written to {path}")
        return 0
    record = vqa_experiment(cfg, run_dir, init, label=cfg.checkpoint or cfg.model)["record"]
    run_dir.log(record)
    path = run_dir.save_json(f"vqa_{record['dataset']}.json", [record])
    print(json.dumps(record, indent=2, default=str))
    print(f"metrics written to {path}")
    return 0
