"""Launch plans for any ``python -m florence_lib <command>`` on a Slurm cluster or as local ranks.

A plan resolves the command's config exactly as the job will (profile <- ``--config`` <- ``--set``, through the
command's own ``--dry-run``), checks it against the launch before anything is submitted (for pretraining also
the batch arithmetic, precision and ZeRO settings of ``ds_config.check_launch``), and renders the commands: the
sbatch script from ``cluster/job.sbatch``, the per-node ``srun`` or ``deepspeed --hostfile`` line, and for local
runs a ``torchrun`` line with gloo ranks. ``python -m florence_lib launch`` (and ``cluster/launch.py``) prints,
writes, runs or submits a plan; ``launch/submit.py`` sends it through submitit.

Every rank runs the same entry point; ``florence_lib.distributed.init_distributed`` reads its place from the
environment torchrun, the DeepSpeed launcher or srun gives it. A requeued job reruns the same command into the same
run directory, which resumes from its latest checkpoint there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shlex
import string
import sys
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, dump_yaml, field, load_config
from ..resources import resolve_project_path, resource_dir, source_root
from ..training.config import PretrainConfig
from ..training.ds_config import BatchPlan, pretrain_ds_config

TIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2}):(\d{2})$")
PAPER_CONFIG = "cluster/paper.yaml"
"""The pretraining scale-out section the paper's run adds on top of ``--profile paper``."""
NOT_LAUNCHABLE = ("launch", "lab", "info")
DATA_PARALLEL = ("pretrain",)
"""Commands whose ranks train one model together (the others run as one task; see ``check_world``)."""


@dataclasses.dataclass
class ClusterConfig:
    """Where and how the ranks run; what they compute is the command's own config."""

    command: str = field("pretrain", help="the florence_lib command every rank runs (pretrain, evaluate, ...)")
    command_args: list[str] = field(default_factory=list,
                                    help="the command's own arguments, e.g. [zero-shot, --dataset, world]")
    nodes: int | None = field(None, min=1, help="nodes of the allocation; null: 64 for pretrain, else 1")
    gpus_per_node: int | None = field(None, min=1, help="tasks (one per GPU) per node; null: 8 for pretrain, else 1")
    launcher: Literal["srun", "deepspeed"] = field("srun", help="srun: one task per GPU; deepspeed: pdsh + hostfile")
    partition: str = field("gpu", help="Slurm partition")
    account: str | None = field(None, help="Slurm account to charge; null: the user's default")
    time: str = field("72:00:00", help="time limit per allocation, [D-]HH:MM:SS; preemption or timeout requeues "
                                       "and the rerun resumes")
    cpus_per_task: int = field(10, min=1, help="CPU cores per task (data loading; OMP_NUM_THREADS)")
    master_port: int | None = field(None, min=1024, max=65535,
                                    help="rendezvous port; null: 20000 + job id mod 20000 (no clash between jobs "
                                         "sharing a node), a free port for local runs")
    job_name: str | None = field(None, help="Slurm job name; null: florence-<command>")
    environment: str = field("source .venv/bin/activate",
                             help="shell line the job runs to activate the Python environment "
                                  "(e.g. 'conda activate florence'); empty: none")
    workdir: str | None = field(None, help="the job's working directory (the checkout); null: the checkout "
                                           "holding florence_lib, else the current directory")
    profile: str = field("paper", help="the command's --profile")
    config_file: str | None = field("default", help="the command's --config; 'default': cluster/paper.yaml for "
                                                    "pretrain at profile paper, none otherwise")
    overrides: list[str] = field(default_factory=list, help="the command's --set key=value overrides")
    run_dir: str | None = field(None, help="the command's --run-dir (relative to workdir); null: "
                                           "runs/florence-<command>-<profile>")

    def validate(self) -> None:
        from ..cli import COMMANDS

        if self.command not in COMMANDS or self.command in NOT_LAUNCHABLE:
            allowed = [c for c in COMMANDS if c not in NOT_LAUNCHABLE]
            raise ConfigError(f"command: {self.command!r} cannot be launched; one of {', '.join(allowed)}")
        if not TIME.match(self.time):
            raise ConfigError(f"time: {self.time!r} is not [D-]HH:MM:SS")

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.tasks_per_node

    @property
    def num_nodes(self) -> int:
        return self.nodes or (64 if self.command == "pretrain" else 1)

    @property
    def tasks_per_node(self) -> int:
        return self.gpus_per_node or (8 if self.command == "pretrain" else 1)

    @property
    def name(self) -> str:
        return self.job_name or f"florence-{self.command}"

    @property
    def directory(self) -> Path:
        return Path(self.workdir) if self.workdir else (source_root() or Path.cwd())

    @property
    def run_path(self) -> str:
        return self.run_dir or f"runs/florence-{self.command}-{self.profile}"

    @property
    def config_path(self) -> str | None:
        if self.config_file == "default":
            return PAPER_CONFIG if self.command == "pretrain" and self.profile == "paper" else None
        return self.config_file


def time_minutes(limit: str) -> int:
    """``[D-]HH:MM:SS`` in whole minutes (rounded up), for submitit's ``timeout_min``."""
    m = TIME.match(limit)
    if not m:
        raise ConfigError(f"time: {limit!r} is not [D-]HH:MM:SS")
    days, h, mins, s = (int(x or 0) for x in m.groups())
    return days * 1440 + h * 60 + mins + (s > 0)


@dataclasses.dataclass
class LaunchPlan:
    cluster: ClusterConfig
    world_size: int
    resolved: str
    """The command's resolved config as its ``--dry-run`` prints it."""
    pretrain: PretrainConfig | None = None
    batch: BatchPlan | None = None
    ds_config: dict | None = None

    def command_args(self) -> list[str]:
        """What every rank passes to ``python -m florence_lib``: the command, its arguments, profile, run dir."""
        c = self.cluster
        args = [c.command, *c.command_args, "--profile", c.profile, "--run-dir", c.run_path]
        if c.config_path:  # as written where the workdir has it (a checkout), else the installed copy's path
            args += ["--config", c.config_path if (c.directory / c.config_path).is_file() else str(config_here(c))]
        if c.overrides:
            args += ["--set", *c.overrides]
        return args

    def rank_command(self) -> str:
        """The command that starts the ranks inside the allocation."""
        c = self.cluster
        if c.launcher == "deepspeed":
            cmd = ["deepspeed", "--hostfile", "$HOSTFILE", "--num_nodes", str(c.num_nodes), "--num_gpus",
                   str(c.tasks_per_node), "--master_addr", "$MASTER_ADDR", "--master_port", "$MASTER_PORT",
                   "--module", "florence_lib", *self.command_args()]
        else:
            cmd = ["srun", "--wait-all-nodes=1", "--kill-on-bad-exit=1", "python", "-m", "florence_lib",
                   *self.command_args()]
        return " ".join(a if a.startswith("$") else shlex.quote(a) for a in cmd)

    def log_dir(self) -> Path:
        """Where Slurm writes the job's log: the run directory, absolute (Slurm does not create it)."""
        return self.cluster.directory / self.cluster.run_path

    def sbatch_script(self, template: Path | None = None) -> str:
        c = self.cluster
        port = str(c.master_port) if c.master_port else "$((20000 + SLURM_JOB_ID % 20000))"
        tasks = 1 if c.launcher == "deepspeed" else c.tasks_per_node  # pdsh starts the ranks of a node itself
        template = template or resource_dir("cluster") / "job.sbatch"
        return string.Template(template.read_text(encoding="utf-8")).substitute(
            job_name=c.name, nodes=c.num_nodes, tasks_per_node=tasks, gpus_per_node=c.tasks_per_node,
            cpus_per_task=c.cpus_per_task, partition=c.partition, time=c.time,
            account_line=f"#SBATCH --account={c.account}" if c.account else "",
            workdir=shlex.quote(str(c.directory)), log_dir=self.log_dir(), run_dir=shlex.quote(c.run_path),
            environment=c.environment or "# (no environment activation configured: --environment)",
            master_port=port, rank_command=self.rank_command())

    def write_sbatch(self, path: str | Path) -> Path:
        """Write the script and create its log folder (Slurm would not, and the job would die without a log)."""
        self.log_dir().mkdir(parents=True, exist_ok=True)
        path = Path(path)
        path.write_text(self.sbatch_script(), encoding="utf-8")
        return path

    def local_command(self, ranks: int = 2) -> list[str]:
        """The same job as ``ranks`` gloo processes on this machine (one thread each)."""
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                "-m", "florence_lib", *self.command_args()]

    def summary(self) -> str:
        c = self.cluster
        where = (f"{c.num_nodes} nodes x {c.tasks_per_node} GPUs" if self.world_size == c.world_size
                 else f"{self.world_size} local ranks")
        head = f"# {c.command}: world {self.world_size} = {where}\n"
        if self.batch is not None:
            b = self.batch
            head = (f"# world {b.world_size} = {where}; "
                    f"batch {b.global_batch} = {b.world_size} ranks x {b.micro_batch} images x {b.chunks} "
                    f"gradient-cache chunks x {b.accumulation_steps} accumulation steps\n")
        out = head + f"# {c.command} config (resolved):\n{self.resolved}"
        if self.ds_config is not None:
            out += f"# DeepSpeed config (generated):\n{json.dumps(self.ds_config, indent=2)}\n"
        return out


def config_here(cluster: ClusterConfig) -> Path:
    """The command's ``--config`` file as the job will read it from its workdir (or the installed copy)."""
    path = cluster.directory / cluster.config_path
    return path if path.is_file() else resolve_project_path(cluster.config_path)


def resolve_command(cluster: ClusterConfig) -> str:
    """The command's resolved config, through its own ``--dry-run`` (so any command is checked like it runs)."""
    from ..cli import main

    args = list(LaunchPlan(cluster, 0, "").command_args())
    if cluster.config_path:
        args[args.index("--config") + 1] = str(config_here(cluster))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, "--dry-run"])
    if code != 0:
        reason = err.getvalue().strip().splitlines()[-1:] or [f"exit status {code}"]
        raise ConfigError(f"{cluster.command}: {reason[0].removeprefix('florence_lib: error: ')}")
    return out.getvalue()


def check_world(command: str, world: int) -> None:
    if world > 1 and command not in DATA_PARALLEL:
        raise ConfigError(f"nodes/gpus_per_node: {command} runs as one task (its engine is not data-parallel); "
                          f"a world of {world} would repeat the same run {world} times; use 1 node x 1 GPU")


def plan_launch(cluster: ClusterConfig, *, local_ranks: int | None = None) -> LaunchPlan:
    """Resolve and check the job; ``local_ranks`` plans it for this machine's CPUs instead of the cluster's GPUs."""
    world = local_ranks or cluster.world_size
    check_world(cluster.command, world)
    resolved = resolve_command(cluster)
    if cluster.command != "pretrain":
        return LaunchPlan(cluster, world, resolved)
    config = cluster.config_path and config_here(cluster)
    cfg = load_config(PretrainConfig, command="pretrain", profile=cluster.profile, config_file=config,
                      overrides=cluster.overrides)
    batch, ds = pretrain_ds_config(cfg, world, cuda=local_ranks is None,
                                   gpus_per_node=None if local_ranks else cluster.tasks_per_node)
    return LaunchPlan(cluster, world, dump_yaml(cfg), cfg, batch, ds)


def describe(plan: LaunchPlan) -> dict[str, Any]:
    """The plan's key facts as a flat record (what the notebook prints)."""
    c = plan.cluster
    return {"command": c.command, "world_size": plan.world_size, "nodes": c.num_nodes,
            "tasks_per_node": c.tasks_per_node, "run_dir": c.run_path, "job_name": c.name, "time": c.time}
