"""``python -m florence_lib evaluate <protocol>``: one transfer protocol on one set -> metrics JSON.

    python -m florence_lib evaluate zero-shot --checkpoint runs/x/checkpoints --dataset world-heldout
    python -m florence_lib evaluate linear-probe --data-root ../shared/data --dataset eurosat --profile quick
    python -m florence_lib evaluate few-shot --dataset isic2018 --data-root ../shared/data
    python -m florence_lib evaluate retrieval --dataset coco --data-root ../shared/data
    python -m florence_lib evaluate finetune --dataset world --set finetune.mode=linear
    python -m florence_lib evaluate finetune-retrieval --dataset coco --data-root ../shared/data
    python -m florence_lib evaluate linear-probe --dataset path/to/my_images     # train/ + test/, or one folder
    python -m florence_lib evaluate retrieval --dataset captions.json --images path/to/images
    python -m florence_lib evaluate retrieval --dataset pairs.csv                  # image,caption rows

Each run writes ``config.yaml`` and ``meta.json``, appends its flat records to ``metrics.jsonl`` and writes
them to ``<protocol>_<dataset>.json``. ``--checkpoint``, ``--data-root``, ``--dataset`` and ``--images`` are
shorthands for the config keys of the same names; data_root defaults to $FLORENCE_DATA_ROOT or ../shared/data.
A dataset that is neither a known name nor a readable path exits 2 with the reason, before a model is built.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import print_dry_run, resolve_config
from ..data.errors import DataError
from ..runs import RunDir, data_root_or_none
from .config import EvalConfig

HELP = "transfer evaluation (paper Tables 1-5): zero-shot, linear-probe, finetune, few-shot, retrieval"
RUN_DIR_HELP = "where config, metrics.jsonl and <protocol>_<dataset>.json go (default: runs/evaluate-<protocol>)"
PROTOCOLS = {"zero-shot": "zero_shot", "linear-probe": "linear_probe", "few-shot": "few_shot",
             "retrieval": "retrieval", "finetune": "finetune", "finetune-retrieval": "finetune_retrieval"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", choices=PROTOCOLS, help="which protocol to run")
    parser.add_argument("--checkpoint", help="checkpoint dir, weights file or run dir (default: untrained)")
    parser.add_argument("--data-root", help="folder of the real evaluation sets (e.g. ../shared/data)")
    parser.add_argument("--dataset", help="evaluation set (world, world-heldout, eurosat, coco, ...) or a path "
                                          "(ImageFolder; COCO-captions .json; image,caption .csv)")
    parser.add_argument("--images", help="image folder of a COCO-captions .json given as --dataset")


def main(args: argparse.Namespace) -> int:
    shorthands = [f"{key}={value}" for key, value in
                  (("checkpoint", args.checkpoint), ("data_root", args.data_root), ("dataset", args.dataset),
                   ("images", args.images))
                  if value is not None]
    args.overrides = [*shorthands, *args.overrides]  # an explicit --set wins
    cfg = resolve_config(args, EvalConfig, "evaluate")
    task = PROTOCOLS[args.protocol]
    if cfg.data_root is None and (found := data_root_or_none()) is not None:
        cfg.data_root = str(found)
    from .datasets import check_dataset, dataset_label  # reads no image, builds no model

    try:  # before any model is built: a wrong name or path costs nothing
        check_dataset(task, cfg.dataset, cfg.data_root, cfg.images)
    except DataError as exc:
        print(f"florence_lib: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        return print_dry_run(cfg)
    from .evaluator import Evaluator  # torch and the model zoo: only when there is work to do

    run_dir = RunDir(args.run_dir) if args.run_dir else RunDir.create(name=f"evaluate-{args.protocol}")
    run_dir.start(cfg, seed=cfg.seed, protocol=task)
    evaluator = Evaluator.from_config(cfg, run_dir)
    records = getattr(evaluator, task)(cfg.dataset).records
    for record in records:
        run_dir.log(record)
    path = run_dir.save_json(f"{task}_{dataset_label(cfg.dataset)}.json", records)
    print(json.dumps(records, indent=2, default=str))
    print(f"metrics written to {path}")
    return 0
