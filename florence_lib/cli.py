"""``python -m florence_lib <command> --config FILE --set key=value ...`` (installed: ``florence <command> ...``)

Commands are looked up lazily in :data:`COMMANDS` (``name -> "module"``). A command module provides::

    HELP: str                                            one line for ``--help``
    RUN_DIR_HELP: str                                    optional: what the command does with ``--run-dir``
    CONFIG = None                                        optional: the command has no config (``--help-config``)
    def add_arguments(parser: argparse.ArgumentParser)   optional: extra arguments of its own
    def main(args: argparse.Namespace) -> int            resolve the config with resolve_config(), then work

and its module docstring is the command's ``--help`` description (put usage examples there).

Every command gets ``--config FILE``, ``--set key=value ...``, ``--profile smoke|quick|paper``, ``--run-dir DIR``,
``--dry-run`` (print the resolved config and exit) and ``--help-config`` (every config key with its type, default,
range and help). A bad argument or config exits with status 2 and a one-line reason that names the key; nothing
runs before the whole config has been validated.

Only the chosen command's module is imported: ``--help`` reads the other commands' ``HELP`` lines from their
source, so that it answers at once instead of importing torch and the model zoo.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from .config import PROFILES, ConfigError, dump_yaml, load_config

T = TypeVar("T")

COMMANDS: dict[str, str] = {
    "info": "florence_lib.commands.info",
    "curate": "florence_lib.curation.command",
    "pretrain": "florence_lib.training.command",
    "evaluate": "florence_lib.evaluation.command",
    "launch": "florence_lib.commands.launch",
    "lab": "florence_lib.commands.lab",
    "detect": "florence_lib.detection.command",
    "vl": "florence_lib.vl.command",
    "video": "florence_lib.video.command",
}

GENERIC_EXAMPLES = """\
every command also takes:
  {prog} {name} --profile smoke --dry-run        print the resolved config and exit
  {prog} {name} --help-config                    every config key: type, default, range, help
  {prog} {name} --profile quick --set KEY=VALUE  override any key (see --help-config)"""


class UsageError(Exception):
    """Raised by the parser instead of printing a multi-line usage block."""


class ConfigHelpShown(Exception):  # noqa: N818 - a signal, not an error
    """Raised by :func:`resolve_config` under ``--help-config`` once the keys are printed: stop, exit 0."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def prog_name() -> str:
    """``florence`` when run as the console script, else ``python -m florence_lib``."""
    return "florence" if Path(sys.argv[0]).name == "florence" else "python -m florence_lib"


def add_local_rank_argument(parser: argparse.ArgumentParser, dest: str = "local_rank") -> None:
    """DeepSpeed's launcher passes ``--local_rank=N`` to every rank (before or after the command name)."""
    parser.add_argument("--local_rank", "--local-rank", dest=dest, type=int, default=None, help=argparse.SUPPRESS)


def add_common_arguments(parser: argparse.ArgumentParser, run_dir_help: str | None = None) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML file with config values (on top of --profile)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override config values, e.g. --set optim.lr=1e-3 data.batch_size=64")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="run profile: smoke (tests, seconds), quick (main job, minutes), paper (cluster)")
    parser.add_argument("--run-dir", metavar="DIR", default=None,
                        help=run_dir_help or "run directory (default: runs/<command>-<timestamp> under the "
                                             "current directory)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--help-config", action="store_true",
                        help="list every config key (type, default, allowed range, help) and exit")
    add_local_rank_argument(parser)


def resolve_config(args: argparse.Namespace, cls: type[T], command: str) -> T:
    """The command's config from its profile, ``--config`` and ``--set``; raises ConfigError on any bad key.

    Under ``--help-config`` it prints the keys of ``cls`` instead (values of the chosen profile beside the
    defaults) and raises :class:`ConfigHelpShown`, so that every command gets the listing without code of its own.
    """
    if getattr(args, "help_config", False):
        from .config_doc import describe_config

        resolved = None
        if args.profile or args.config or args.overrides:
            resolved = load_config(cls, command=command, profile=args.profile, config_file=args.config,
                                   overrides=args.overrides)
        print(describe_config(cls, resolved))
        raise ConfigHelpShown
    return load_config(cls, command=command, profile=args.profile, config_file=args.config,
                       overrides=args.overrides)


def print_dry_run(cfg: Any) -> int:
    print(dump_yaml(cfg), end="")
    return 0


def command_help(module_name: str) -> str | None:
    """A command's ``HELP`` line read from its source without importing it (None if it has none)."""
    package_dir = Path(__file__).resolve().parent
    parts = module_name.split(".")[1:]
    candidates = [package_dir.joinpath(*parts).with_suffix(".py"), package_dir.joinpath(*parts, "__init__.py")]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return getattr(importlib.import_module(module_name), "HELP", None)
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HELP" for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                break
    return None


def build_parser(command: str | None = None, help_config: bool = False) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (and its arguments added), the others are listed."""
    prog = prog_name()
    parser = _Parser(prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                     description="Florence reproduction (arXiv 2111.11432): curate, pretrain, evaluate, launch on "
                                 "a cluster, open the notebooks.",
                     epilog=f"examples:\n  {prog} pretrain --profile smoke --run-dir runs/pretrain-smoke\n"
                            f"  {prog} pretrain --help-config\n  {prog} launch pretrain --dry-run\n"
                            f"  {prog} lab\n\n{prog} <command> --help shows a command's options and examples.")
    add_local_rank_argument(parser, dest="local_rank_before_command")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=command_help(module_name), add_help=False)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=getattr(module, "HELP", None), description=_description(module),
                           epilog=GENERIC_EXAMPLES.format(prog=prog, name=name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common_arguments(p, getattr(module, "RUN_DIR_HELP", None))
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
        if help_config:  # list the keys without the command's required arguments (e.g. curate's --input)
            for action in p._actions:
                action.required = False
    return parser


def _description(module: Any) -> str:
    doc = (module.__doc__ or getattr(module, "HELP", "") or "").strip()
    return doc.replace("python -m florence_lib", prog_name())


def _chosen_command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def quiet_other_ranks(environ: MutableMapping[str, str] = os.environ) -> None:
    """Ranks > 0 of a launch draw no tqdm bars (any module's): tqdm reads TQDM_DISABLE when it is imported."""
    rank = environ.get("RANK") or environ.get("SLURM_PROCID")
    if rank and rank.isdigit() and int(rank) > 0:
        environ.setdefault("TQDM_DISABLE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_other_ranks()
    try:
        command = _chosen_command(argv)
        parser = build_parser(command if command in COMMANDS else None, help_config="--help-config" in argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        local_rank = args.local_rank if args.local_rank is not None else args.local_rank_before_command
        if local_rank is not None:  # the DeepSpeed launcher's flag; torch.distributed reads the variable
            os.environ.setdefault("LOCAL_RANK", str(local_rank))
        module = importlib.import_module(COMMANDS[args.command])
        if args.help_config and getattr(module, "CONFIG", True) is None:
            print(f"{args.command} has no config keys; see {prog_name()} {args.command} --help")
            return 0
        return int(module.main(args) or 0)
    except ConfigHelpShown:
        return 0
    except (UsageError, ConfigError) as e:
        print(f"florence_lib: error: {e}", file=sys.stderr)
        return 2
