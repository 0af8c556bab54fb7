"""Launch plans for ``python -m florence_lib pretrain`` on a Slurm cluster or as local ranks.

A plan resolves the pretraining config exactly as the job will (profile <- ``--config`` <- ``--set``), checks it
against the launch's world size before anything is submitted (``ds_config.check_launch``), and renders the commands:
the sbatch script from ``cluster/pretrain.sbatch``, the per-node ``srun`` or ``deepspeed --hostfile`` line, and
for local runs a ``torchrun`` line with gloo ranks. ``cluster/launch.py`` prints, runs or submits a plan.

Every rank runs the same entry point; ``florence_lib.distributed.init_distributed`` reads its place from the
environment torchrun, the DeepSpeed launcher or srun gives it. A requeued job reruns the same command into the same
run directory, and pretraining resumes from the latest checkpoint there.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import string
import sys
from pathlib import Path
from typing import Literal

from ..config import dump_yaml, field, load_config
from ..runs import PROJECT_ROOT
from .config import PretrainConfig
from .ds_config import BatchPlan, pretrain_ds_config

SBATCH_TEMPLATE = PROJECT_ROOT / "cluster" / "pretrain.sbatch"


@dataclasses.dataclass
class ClusterConfig:
    """Where and how the ranks run; what they train is the pretraining config."""

    nodes: int = field(64, min=1)
    gpus_per_node: int = field(8, min=1)
    launcher: Literal["srun", "deepspeed"] = field("srun", help="srun: one task per GPU; deepspeed: pdsh + hostfile")
    partition: str = "gpu"
    account: str | None = None
    time: str = field("72:00:00", help="per allocation; preemption or timeout requeues and resumes")
    cpus_per_task: int = field(10, min=1)
    master_port: int = field(29500, min=1024, max=65535)
    job_name: str = "florence-pretrain"
    profile: str = "paper"
    config_file: str | None = field("cluster/paper.yaml", help="pretraining config file on top of the profile")
    overrides: list[str] = field(default_factory=list, help="pretraining key=value overrides")
    run_dir: str = "runs/florence-paper"

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclasses.dataclass
class LaunchPlan:
    cluster: ClusterConfig
    pretrain: PretrainConfig
    batch: BatchPlan
    ds_config: dict

    def pretrain_args(self) -> list[str]:
        """The arguments every rank passes to ``python -m florence_lib pretrain``."""
        c = self.cluster
        args = ["--profile", c.profile, "--run-dir", c.run_dir]
        if c.config_file:
            args += ["--config", c.config_file]
        if c.overrides:
            args += ["--set", *c.overrides]
        return args

    def rank_command(self) -> str:
        """The command that starts the ranks inside the allocation."""
        c, entry = self.cluster, ["-m", "florence_lib", "pretrain", *self.pretrain_args()]
        if c.launcher == "deepspeed":
            cmd = ["deepspeed", "--hostfile", "$HOSTFILE", "--num_nodes", str(c.nodes), "--num_gpus",
                   str(c.gpus_per_node), "--master_addr", "$MASTER_ADDR", "--master_port", str(c.master_port),
                   "--module", "florence_lib", "pretrain", *self.pretrain_args()]
        else:
            cmd = ["srun", "--kill-on-bad-exit=1", "python", *entry]
        return " ".join(a if a.startswith("$") else shlex.quote(a) for a in cmd)

    def sbatch_script(self, template: Path = SBATCH_TEMPLATE) -> str:
        c = self.cluster
        return string.Template(template.read_text(encoding="utf-8")).substitute(
            job_name=c.job_name, nodes=c.nodes, gpus_per_node=c.gpus_per_node, cpus_per_task=c.cpus_per_task,
            partition=c.partition, account_line=f"#SBATCH --account={c.account}" if c.account else "",
            time=c.time, master_port=c.master_port, run_dir=c.run_dir, rank_command=self.rank_command())

    def local_command(self, ranks: int = 2) -> list[str]:
        """The same job as ``ranks`` gloo processes on this machine (one thread each)."""
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                "-m", "florence_lib", "pretrain", *self.pretrain_args()]

    def summary(self) -> str:
        b = self.batch
        return (f"# world {b.world_size} = {self.cluster.nodes} nodes x {self.cluster.gpus_per_node} GPUs; "
                f"batch {b.global_batch} = {b.world_size} ranks x {b.micro_batch} images x {b.chunks} "
                f"gradient-cache chunks x {b.accumulation_steps} accumulation steps\n"
                f"# pretraining config (resolved):\n{dump_yaml(self.pretrain)}"
                f"# DeepSpeed config (generated):\n{json.dumps(self.ds_config, indent=2)}\n")


def plan_launch(cluster: ClusterConfig, *, local_ranks: int | None = None) -> LaunchPlan:
    """Resolve and check the job; ``local_ranks`` plans it for this machine's CPUs instead of the cluster's GPUs."""
    config_file = cluster.config_file and str(PROJECT_ROOT / cluster.config_file)
    cfg = load_config(PretrainConfig, command="pretrain", profile=cluster.profile, config_file=config_file,
                      overrides=cluster.overrides)
    world = local_ranks or cluster.world_size
    batch, ds = pretrain_ds_config(cfg, world, cuda=local_ranks is None,
                                   gpus_per_node=None if local_ranks else cluster.gpus_per_node)
    return LaunchPlan(cluster, cfg, batch, ds)
