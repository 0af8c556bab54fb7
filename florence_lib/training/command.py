"""``python -m florence_lib pretrain``: UniCL pretraining on ``data.sources`` (the embedded world by default).

    python -m florence_lib pretrain --profile quick --run-dir runs/pretrain-quick
    python -m florence_lib pretrain --profile smoke --set loss=clip data.caption=long
    python -m florence_lib pretrain --profile quick --set 'data.sources=[{kind: shards, path: curated/shards}]'

Rerunning with the same ``--run-dir`` resumes from its latest checkpoint (``--set resume=false`` starts over).
"""

from __future__ import annotations

import argparse
import json

from ..cli import print_dry_run, resolve_config
from ..runs import RunDir
from .config import PretrainConfig

HELP = "pretrain a UniCL model (CoSwin + text encoder) on data.sources (default: the world); resumes from --run-dir"


def main(args: argparse.Namespace) -> int:
    cfg = resolve_config(args, PretrainConfig, "pretrain")
    if args.dry_run:
        return print_dry_run(cfg)
    from ..data.sources import check_sources
    from .pretrain import pretrain  # imports torch and the model zoo: only when there is work to do

    check_sources(cfg.data.sources)  # before the run directory is made
    run_dir = RunDir(args.run_dir) if args.run_dir else RunDir.create(name=f"pretrain-{args.profile or 'default'}")
    print(json.dumps(pretrain(cfg, run_dir), indent=2))
    return 0
