"""``python -m florence_lib info``: print the environment report (versions, threads, devices) as JSON.

    python -m florence_lib info                 # what a bug report or a benchmark result should carry
    python -m florence_lib info > env.json
"""

from __future__ import annotations

import argparse
import json

from ..runs import environment_report

HELP = "print versions, threads and devices as JSON"
RUN_DIR_HELP = "not used: info only prints"
CONFIG = None  # no config keys: its options are its flags


def main(args: argparse.Namespace) -> int:
    print(json.dumps(environment_report(), indent=2))
    return 0
