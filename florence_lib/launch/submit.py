"""Submit a launch plan through submitit: to Slurm, or to submitit's local executor (tests, notebooks).

    plan = plan_launch(ClusterConfig(command="pretrain", profile="paper"))
    job = submit(plan, "runs/florence-pretrain-paper/submitit")          # Slurm; cluster="local" runs it here
    progress(plan)                                                        # last metrics of the run directory
    job.result()                                                          # every task's exit status

Every task runs the plan's command through the CLI with the place submitit gives it (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT derived from the job id). On preemption or timeout submitit calls
:meth:`CommandJob.checkpoint`, which resubmits the same command: the rerun resumes from the run directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..runs import read_metrics
from .plan import LaunchPlan, time_minutes


def job_port(job_id: str, base: int = 20000) -> int:
    """A rendezvous port from the job id (``12345`` or array ``12345_7``): jobs sharing a node do not clash."""
    digits = "".join(ch for ch in job_id.split("_")[0] if ch.isdigit())
    return base + int(digits or 0) % 20000


class CommandJob:
    """A submitit job: every task runs ``python -m florence_lib <command> ...``; on preemption it requeues."""

    def __init__(self, plan: LaunchPlan) -> None:
        self.argv = plan.command_args()
        self.workdir = str(plan.cluster.directory)
        self.port = plan.cluster.master_port

    def __call__(self) -> int:
        import submitit

        from ..cli import main

        env = submitit.JobEnvironment()
        os.chdir(self.workdir)
        os.environ.update({"RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks),
                           "LOCAL_RANK": str(env.local_rank), "MASTER_ADDR": env.hostnames[0],
                           "MASTER_PORT": str(self.port or job_port(str(env.job_id)))})
        code = main(self.argv)
        if code:
            raise RuntimeError(f"florence_lib {' '.join(self.argv)} exited with status {code}")
        return code

    def checkpoint(self) -> Any:
        """Called by submitit on preemption/timeout: rerun the same command; it resumes from its checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def submit(plan: LaunchPlan, folder: str | Path, cluster: str | None = None) -> Any:
    """Submit ``plan``; ``cluster``: None picks Slurm where present, ``"local"`` runs it on this machine."""
    import submitit

    c = plan.cluster
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    local = executor.cluster in ("local", "debug")
    if local and cluster is None:  # submitit falls back to this machine when it finds no Slurm: say so instead
        raise ConfigError(f"no Slurm cluster found here (submitit chose {executor.cluster!r}); submit from a login "
                          "node, or run it on this machine explicitly (--executor local, cluster='local')")
    params: dict[str, Any] = {"name": c.name, "timeout_min": time_minutes(c.time), "nodes": c.num_nodes,
                              "tasks_per_node": c.tasks_per_node, "cpus_per_task": c.cpus_per_task}
    if local:  # this machine: one node, the plan's ranks (plan_launch(..., local_ranks=N))
        params |= {"nodes": 1, "tasks_per_node": plan.world_size}
    if not local:
        params |= {"gpus_per_node": c.tasks_per_node, "slurm_partition": c.partition, "slurm_signal_delay_s": 120,
                   **({"slurm_account": c.account} if c.account else {})}
    executor.update_parameters(**params)
    return executor.submit(CommandJob(plan))


def progress(plan: LaunchPlan) -> dict[str, Any]:
    """The run directory's progress: records logged so far, the last train and validation records."""
    run_dir = plan.cluster.directory / plan.cluster.run_path
    records = list(read_metrics(run_dir / "metrics.jsonl"))
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    return {"records": len(records), "last_train": train[-1] if train else None, "last_val": val[-1] if val else None}
