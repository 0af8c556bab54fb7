"""``python -m florence_lib pretrain``: UniCL pretraining on ``data.sources`` (the embedded world by default).

    python -m florence_lib pretrain --profile quick                       # -> runs/pretrain-quick, resumable
    python -m florence_lib pretrain --profile smoke --set loss=clip data.caption=long
    python -m florence_lib pretrain --profile quick --set 'data.sources=[{kind: shards, path: curated/shards}]'
    python -m florence_lib pretrain --profile quick --set tensorboard=true   # + TensorBoard events in the run dir
    python -m florence_lib pretrain --help-config                         # every key, type, default, range
    python -m florence_lib launch pretrain --dry-run                      # the paper's run on a cluster

Rerunning with the same ``--run-dir`` resumes from its latest checkpoint (``--set resume=false`` starts over).
Several ranks (torchrun, srun, the DeepSpeed launcher) need ``distributed.engine: deepspeed``.
"""

from __future__ import annotations

import argparse
import json
import os

from ..cli import print_dry_run, resolve_config
from ..config import ConfigError
from ..runs import RunDir
from .config import PretrainConfig

HELP = "pretrain a UniCL model (CoSwin + text encoder) on data.sources (default: the world); resumes from --run-dir"
RUN_DIR_HELP = ("where config, metrics.jsonl, checkpoints and results.json go (default: runs/pretrain-<profile> "
                "under the current directory); a rerun into the same directory resumes from its latest checkpoint")


def launched_world_size(environ: os._Environ | dict[str, str] | None = None) -> int:
    """The number of ranks the launcher started (torchrun/deepspeed: WORLD_SIZE; srun: SLURM_NTASKS)."""
    environ = os.environ if environ is None else environ
    return int(environ.get("WORLD_SIZE") or environ.get("SLURM_NTASKS") or 1)


def check_world(cfg: PretrainConfig, world: int) -> None:
    """Refuse several ranks that would each train alone on the full batch and write to one run directory."""
    if world > 1 and cfg.distributed.engine != "deepspeed":
        raise ConfigError(f"distributed.engine: 'torch' trains in one process, but this launch started {world} "
                          "ranks (each would train alone on the full batch into the same run directory); set "
                          "distributed.engine=deepspeed (zero_stage 0 is plain data parallel) or start one process")


def main(args: argparse.Namespace) -> int:
    cfg = resolve_config(args, PretrainConfig, "pretrain")
    if args.dry_run:
        return print_dry_run(cfg)
    check_world(cfg, launched_world_size())
    from ..data.sources import check_sources
    from ..distributed import is_main_process
    from .pretrain import pretrain  # imports torch and the model zoo: only when there is work to do

    check_sources(cfg.data.sources)  # before the run directory is made
    run_dir = RunDir(args.run_dir) if args.run_dir else RunDir.create(name=f"pretrain-{args.profile or 'default'}")
    results = pretrain(cfg, run_dir)
    if is_main_process():  # one copy in a Slurm log, not one per rank
        print(json.dumps(results, indent=2))
    return 0
