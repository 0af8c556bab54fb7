"""``python -m florence_lib launch [COMMAND]``: run any long job at scale -- print the plan, run it as local ranks,
write an sbatch script or submit it with submitit. COMMAND is any registered command (default: pretrain).

    python -m florence_lib launch pretrain --dry-run                 # the paper's run: commands + resolved configs
    python -m florence_lib launch pretrain --local                   # the same job, 2 gloo ranks, smoke profile
    python -m florence_lib launch pretrain --sbatch job.sbatch --partition a100 --environment "conda activate florence"
    python -m florence_lib launch pretrain --submit --nodes 64 --account myproj   # submitit: requeue + resume
    python -m florence_lib launch evaluate --command-args "zero-shot --dataset world" --profile quick --dry-run
    python -m florence_lib launch pretrain --launcher deepspeed --dry-run --set distributed.grad_cache_chunk=8

--profile/--config/--set/--run-dir are the launched command's. Everything is checked before launch (the command's
config through its own --dry-run; for pretraining also batch arithmetic, precision and ZeRO settings); a bad value
exits with status 2 naming the key. ``cluster/launch.py`` is this command as a script.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess

from ..config import from_dict, parse_override

HELP = "launch any long job on Slurm (sbatch or submitit) or as local ranks; --dry-run prints every command"
RUN_DIR_HELP = ("the launched command's --run-dir, relative to --workdir (default: runs/florence-<command>-"
                "<profile>; --local: runs/cluster-local); the Slurm log and submitit files go there too")
# Launch options with their own flags; the rest of ClusterConfig comes from the common arguments.
OWN_FLAGS = ("nodes", "gpus_per_node", "launcher", "partition", "account", "time", "cpus_per_task", "master_port",
             "job_name", "environment", "workdir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..launch import ClusterConfig

    parser.add_argument("target", nargs="?", default="pretrain", metavar="COMMAND",
                        help="the command every rank runs (default: pretrain)")
    parser.add_argument("--command-args", default="", metavar="ARGS",
                        help='the command\'s own arguments as one string, e.g. "zero-shot --dataset world"')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="run the job here as --ranks gloo processes (torchrun)")
    mode.add_argument("--sbatch", metavar="FILE", help="write the sbatch script to FILE and create its log folder")
    mode.add_argument("--submit", action="store_true", help="submit with submitit (Slurm, or --executor local)")
    parser.add_argument("--ranks", type=int, default=None, help="--local: processes (default 2 for pretrain, else 1)")
    parser.add_argument("--executor", choices=("slurm", "local"), default=None,
                        help="--submit: submitit's executor (default: Slurm where present, else local)")
    parser.add_argument("--wait", action="store_true", help="--submit: wait for the job and report its status")
    fields = {f.name: f for f in dataclasses.fields(ClusterConfig)}
    for name in OWN_FLAGS:
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else None
        parser.add_argument("--" + name.replace("_", "-"), dest="cluster_" + name, metavar=name.upper(),
                            help=f"{f.metadata.get('help', '')} (default: {default})")


def cluster_config(args: argparse.Namespace):  # -> ClusterConfig (lazy import keeps --help light)
    from ..launch import ClusterConfig

    given = {name: parse_override(f"x={getattr(args, 'cluster_' + name)}")[1] for name in OWN_FLAGS
             if getattr(args, "cluster_" + name) is not None}
    for name in ("environment", "workdir", "job_name", "partition", "account", "time"):
        if name in given:  # strings stay strings ("1:00:00" must not become a number)
            given[name] = str(getattr(args, "cluster_" + name))
    given |= {"command": args.target, "command_args": shlex.split(args.command_args)}
    if args.profile:
        given["profile"] = args.profile
    if args.config:
        given["config_file"] = args.config
    if args.overrides:
        given["overrides"] = list(args.overrides)
    if args.run_dir:
        given["run_dir"] = args.run_dir
    if args.local:
        local_file = "cluster/local.yaml" if args.target == "pretrain" else None
        given = {"profile": "smoke", "config_file": local_file, "run_dir": "runs/cluster-local"} | given
    return from_dict(ClusterConfig, given)


def main(args: argparse.Namespace) -> int:
    from ..launch import ClusterConfig, plan_launch

    if args.help_config:
        from ..config_doc import describe_config

        print(describe_config(ClusterConfig))
        return 0
    cluster = cluster_config(args)
    ranks = args.ranks or (2 if cluster.command == "pretrain" else 1)
    plan = plan_launch(cluster, local_ranks=ranks if args.local else None)
    if args.dry_run or not (args.local or args.sbatch or args.submit):
        print(plan.summary() + "# rank command:\n" + plan.rank_command() + "\n# local command (--local):\n"
              + shlex.join(plan.local_command(ranks)) + "\n# sbatch script:\n" + plan.sbatch_script())
        return 0
    if args.local:
        cmd = plan.local_command(ranks)
        print(plan.summary() + "# local command:\n" + shlex.join(cmd), flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.setdefault("TORCH_EXTENSIONS_DIR", str(cluster.directory / ".torch_extensions"))
        return subprocess.run(cmd, cwd=cluster.directory, env=env).returncode
    if args.sbatch:
        path = plan.write_sbatch(args.sbatch)
        print(f"wrote {path} (log folder {plan.log_dir()}); submit with: sbatch {path}")
        return 0
    if args.submit:
        from ..launch.submit import submit

        job = submit(plan, plan.log_dir() / "submitit", cluster=args.executor)
        print(f"submitted job {job.job_id} ({' '.join(plan.command_args())}); logs in {plan.log_dir() / 'submitit'}",
              flush=True)
        if args.wait:
            job.result()
            print(f"job {job.job_id}: {job.state}")
    return 0

