"""Layer 4 (faces): long jobs at scale -- launch plans for any CLI command (Slurm sbatch, srun or the DeepSpeed
launcher, local torchrun ranks) and their submission through submitit. ``python -m florence_lib launch`` drives it.

- ``plan``: :class:`ClusterConfig` (where and how the ranks run), :func:`plan_launch` (resolve and check the
  command's config, render the commands and the sbatch script).
- ``submit``: :func:`submit` (submitit, Slurm or local), :func:`progress` (the run directory's last records).
"""

from .plan import ClusterConfig, LaunchPlan, describe, plan_launch
from .submit import CommandJob, progress, submit

__all__ = ["ClusterConfig", "CommandJob", "LaunchPlan", "describe", "plan_launch", "progress", "submit"]
