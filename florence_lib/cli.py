"""``python -m florence_lib <command> --config FILE --set key=value ...``

Commands are looked up lazily in :data:`COMMANDS` (``name -> "module"``). A command module provides::

    HELP: str                                            one line for ``--help``
    def add_arguments(parser: argparse.ArgumentParser)   optional: extra arguments of its own
    def main(args: argparse.Namespace) -> int            resolve the config with resolve_config(), then work

Every command gets ``--config FILE``, ``--set key=value ...``, ``--profile smoke|quick|paper``, ``--run-dir DIR``
and ``--dry-run`` (print the resolved config and exit). A bad argument or config exits with status 2 and a
one-line reason that names the key; nothing runs before the whole config has been validated.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TypeVar

from .config import PROFILES, ConfigError, dump_yaml, load_config

T = TypeVar("T")

COMMANDS: dict[str, str] = {
    "info": "florence_lib.commands.info",
    "curate": "florence_lib.curation.command",
    "pretrain": "florence_lib.training.command",
    "evaluate": "florence_lib.evaluation.command",
    "video": "florence_lib.video.command",
}


class UsageError(Exception):
    """Raised by the parser instead of printing a multi-line usage block."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML file with config values")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override config values, e.g. --set optim.lr=1e-3 data.batch_size=64")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="run profile: smoke (tests), quick (main job), paper (cluster)")
    parser.add_argument("--run-dir", metavar="DIR", default=None, help="run directory (default runs/<timestamp>)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def resolve_config(args: argparse.Namespace, cls: type[T], command: str) -> T:
    """The command's config from its profile, ``--config`` and ``--set``; raises ConfigError on any bad key."""
    return load_config(cls, command=command, profile=args.profile, config_file=args.config,
                       overrides=args.overrides)


def print_dry_run(cfg: Any) -> int:
    print(dump_yaml(cfg), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m florence_lib", description="Florence reproduction: curate, pretrain, evaluate.")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=getattr(module, "HELP", None))
        add_common_arguments(p)
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(importlib.import_module(COMMANDS[args.command]).main(args) or 0)
    except (UsageError, ConfigError) as e:
        print(f"florence_lib: error: {e}", file=sys.stderr)
        return 2
