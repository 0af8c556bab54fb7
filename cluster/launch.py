"""Run Florence pretraining at scale: print the plan, run it locally as 2 CPU ranks, or submit it to Slurm.

    python cluster/launch.py --dry-run                          # the paper's run: commands + resolved configs
    python cluster/launch.py --local                            # the same job, 2 gloo ranks, smoke profile
    python cluster/launch.py --sbatch job.sbatch                # write the sbatch script (then: sbatch job.sbatch)
    python cluster/launch.py --submit --nodes 64 --partition a100   # submitit: requeue on preemption, resume

Everything is checked before launch (batch arithmetic, precision, ZeRO settings); a bad value exits with status 2
and a message naming the key.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from florence_lib.config import ConfigError, from_dict
from florence_lib.training.launch import ClusterConfig, LaunchPlan, plan_launch

ROOT = Path(__file__).resolve().parent.parent


class PretrainJob:
    """A submitit job: every task runs the pretrain command; on preemption it requeues itself."""

    def __init__(self, plan: LaunchPlan) -> None:
        self.args = ["pretrain", *plan.pretrain_args()]
        self.port = plan.cluster.master_port

    def __call__(self) -> int:
        import submitit

        from florence_lib.cli import main

        env = submitit.JobEnvironment()
        os.environ.update({"RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks),
                           "LOCAL_RANK": str(env.local_rank), "MASTER_ADDR": env.hostnames[0],
                           "MASTER_PORT": str(self.port)})
        return main(self.args)

    def checkpoint(self) -> object:
        """Called by submitit on preemption/timeout: rerun the same job; pretraining resumes from its checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def submit(plan: LaunchPlan, folder: Path) -> str:
    import submitit

    c = plan.cluster
    executor = submitit.AutoExecutor(folder=folder)
    executor.update_parameters(name=c.job_name, nodes=c.nodes, tasks_per_node=c.gpus_per_node,
                               gpus_per_node=c.gpus_per_node, cpus_per_task=c.cpus_per_task,
                               slurm_partition=c.partition, timeout_min=_minutes(c.time),
                               slurm_signal_delay_s=120,
                               **({"slurm_account": c.account} if c.account else {}))
    return executor.submit(PretrainJob(plan)).job_id


def _minutes(hms: str) -> int:
    h, m, s = (int(x) for x in hms.split(":"))
    return h * 60 + m + (s > 0)


def parse(argv: list[str]) -> tuple[argparse.Namespace, ClusterConfig]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print commands and resolved configs (default)")
    mode.add_argument("--local", action="store_true", help="run the job here as --ranks gloo processes")
    mode.add_argument("--sbatch", metavar="FILE", help="write the sbatch script to FILE")
    mode.add_argument("--submit", action="store_true", help="submit with submitit")
    p.add_argument("--ranks", type=int, default=2, help="local mode: number of CPU ranks")
    for f in ("nodes", "gpus_per_node", "launcher", "partition", "account", "time", "profile", "config_file",
              "run_dir"):
        p.add_argument("--" + f.replace("_", "-"), dest=f)
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k in ClusterConfig.__dataclass_fields__ and v not in (None, [])}
    if args.local:
        given = {"profile": "smoke", "config_file": "cluster/local.yaml", "run_dir": "runs/cluster-local"} | given
    for k in ("nodes", "gpus_per_node"):
        if k in given:
            given[k] = int(given[k])
    return args, from_dict(ClusterConfig, given)


def main(argv: list[str] | None = None) -> int:
    try:
        args, cluster = parse(sys.argv[1:] if argv is None else argv)
        plan = plan_launch(cluster, local_ranks=args.ranks if args.local else None)
    except ConfigError as e:
        print(f"launch: error: {e}", file=sys.stderr)
        return 2
    if args.local:
        cmd = plan.local_command(args.ranks)
        print(plan.summary() + "# local command:\n" + " ".join(cmd), flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(ROOT / ".torch_extensions")}
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if args.sbatch:
        Path(args.sbatch).write_text(plan.sbatch_script(), encoding="utf-8")
        print(f"wrote {args.sbatch}; submit with: sbatch {args.sbatch}")
        return 0
    if args.submit:
        print(f"submitted job {submit(plan, ROOT / cluster.run_dir / 'submitit')}")
        return 0
    print(plan.summary() + "# sbatch script:\n" + plan.sbatch_script())
    return 0


if __name__ == "__main__":
    sys.exit(main())
