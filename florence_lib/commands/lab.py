"""``python -m florence_lib lab``: JupyterLab on this environment, opened on the notebook series.

    python -m florence_lib lab                        # then open the printed http://127.0.0.1:8888/lab?token=...
    python -m florence_lib lab --port 8890 --no-browser
    make lab ARGS="--port 8890"

It first registers this Python as the Jupyter kernel ``florence_lib`` inside the environment (``--sys-prefix``;
nothing goes to ~/.local), then runs JupyterLab with the defaults that keep others out: bound to 127.0.0.1 and a
token required. On a cluster node, tunnel the port from your machine: ``ssh -N -L 8888:localhost:8888 user@node``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

HELP = "JupyterLab on this environment with the notebooks and the florence_lib kernel (127.0.0.1, token)"
RUN_DIR_HELP = "not used (notebooks write to runs/interactive/<notebook>)"
CONFIG = None  # no config keys: its options are its flags
KERNEL_NAME = "florence_lib"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (default 8888)")
    parser.add_argument("--notebook-dir", default=None, help="default: the project's notebooks/")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser (remote machines)")
    parser.add_argument("--allow-root", action="store_true", help="JupyterLab refuses to run as root without it")
    parser.add_argument("--no-kernel", action="store_true", help="do not (re)register the florence_lib kernel")
    parser.add_argument("--kernel-prefix", default=sys.prefix,
                        help="where the kernel spec goes (default: this environment, %(default)s)")


def kernel_command(prefix: str) -> list[str]:
    return [sys.executable, "-m", "ipykernel", "install", "--prefix", prefix, "--name", KERNEL_NAME,
            "--display-name", f"Python ({KERNEL_NAME})"]


def lab_command(args: argparse.Namespace) -> list[str]:
    from ..resources import resource_dir

    root = Path(args.notebook_dir) if args.notebook_dir else resource_dir("notebooks")
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}", f"--ServerApp.port={args.port}"]
    return cmd + (["--no-browser"] if args.no_browser else []) + (["--allow-root"] if args.allow_root else [])


def main(args: argparse.Namespace) -> int:
    import subprocess

    cmd = lab_command(args)
    if args.dry_run:
        print(("" if args.no_kernel else shlex.join(kernel_command(args.kernel_prefix)) + "\n") + shlex.join(cmd))
        return 0
    env = dict(os.environ)
    if not args.no_kernel:
        subprocess.run(kernel_command(args.kernel_prefix), check=True, capture_output=True)
        kernels = str(Path(args.kernel_prefix) / "share" / "jupyter")
        env["JUPYTER_PATH"] = os.pathsep.join(p for p in (kernels, env.get("JUPYTER_PATH")) if p)
    os.execve(sys.executable, cmd, env)  # become the server: Ctrl-C and signals reach it directly
    return 0
