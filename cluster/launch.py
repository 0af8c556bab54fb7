"""Run a florence_lib job at scale: ``python -m florence_lib launch`` as a script (see its ``--help``).

    python cluster/launch.py --dry-run                          # the paper's pretraining: commands + configs
    python cluster/launch.py --local                            # the same job, 2 gloo ranks, smoke profile
    python cluster/launch.py --sbatch job.sbatch                # write the sbatch script (then: sbatch job.sbatch)
    python cluster/launch.py --submit --nodes 64 --partition a100   # submitit: requeue on preemption, resume
    python cluster/launch.py evaluate --command-args "zero-shot" --profile quick --dry-run   # any command
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from florence_lib.cli import main as cli_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return cli_main(["launch", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
