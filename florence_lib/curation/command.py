"""``python -m florence_lib curate --input PAIRS.csv --output DIR [--eval-images DIR ...] [--set key=value ...]``"""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import print_dry_run, resolve_config
from ..data.errors import DataError
from .config import CurateConfig
from .pipeline import curate

HELP = "curate image-text pairs (FLD-style filters, dedup, label table) into shards, a manifest and a data card"
RUN_DIR_HELP = "not used: curate writes shards, manifest and data card to --output (and resumes there)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="PAIRS",
                        help="CSV with columns image,caption[,source] (paths relative to it), or webdataset shards")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="output folder; rerunning the same command there resumes a killed run")
    parser.add_argument("--eval-images", nargs="+", action="extend", default=[], metavar="DIR",
                        help="evaluation image folders whose near-duplicates are removed (decontamination)")


def main(args: argparse.Namespace) -> int:
    cfg = resolve_config(args, CurateConfig, "curate")
    if args.dry_run:
        return print_dry_run(cfg)
    try:
        result = curate(args.input, args.output, cfg, eval_images=args.eval_images)
    except (DataError, FileNotFoundError) as e:
        print(f"florence_lib: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"output": str(result.output), "rows": result.stats["rows"], "kept": result.stats["kept"],
                      "dropped": {k: v for k, v in result.stats["dropped"].items() if v}}))
    return 0
