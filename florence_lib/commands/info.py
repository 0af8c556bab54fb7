"""``python -m florence_lib info``: print the environment report (versions, threads, devices) as JSON."""

from __future__ import annotations

import argparse
import json

from ..runs import environment_report

HELP = "print versions, threads and devices as JSON"


def main(args: argparse.Namespace) -> int:
    print(json.dumps(environment_report(), indent=2))
    return 0
