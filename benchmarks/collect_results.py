"""Gather every benchmark's latest results into ``benchmarks/RESULTS.md``: one section per benchmark, each with
the host and date it was measured on, as the results file itself recorded them (a file that did not is flagged,
not dated by its modification time); results files starting with ``_`` are scratch and skipped.

    python benchmarks/collect_results.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
ORDER = ("bench_pretrain", "profile_unicl_tiny", "profile_unicl_small", "coswin_ab", "coswin_before_after",
         "profile_earlier", "learnability", "learnability_500", "learnability_lr1e-3", "learnability_lr2e-3",
         "learnability_embeddings", "learnability_sketch", "learnability_thermal", "learnability_xray", "world", "scaling", "curation", "gpu")
"""Sections in reading order; any other results file follows, alphabetically."""


DATE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?(?: UTC)?")
HEADING = re.compile(r"^#.*\(([^,()]+), (" + DATE.pattern + r")")
"""A results table's own heading, ``# Title (host, YYYY-MM-DD HH:MM UTC; ...)``, as the benchmarks write it."""
NOT_RECORDED = "host and date not recorded in the results file: re-run the benchmark"


def recorded(path: Path) -> tuple[str | None, str | None]:
    """``(host, date)`` as the results file itself recorded them when it was measured: the JSON report's (or its
    twin's) top-level ``host``/``date`` or its ``machine`` record's, else the Markdown table's heading. Never the
    file's modification time (a checkout or a rewrite sets that, not the measurement)."""
    twin = path.with_suffix(".json")
    if twin.exists():
        try:
            report = json.loads(twin.read_text())
        except ValueError:
            report = None
        if isinstance(report, dict):
            machine = report.get("machine") if isinstance(report.get("machine"), dict) else {}
            host = report.get("host") or machine.get("host")
            date = report.get("date") or machine.get("date")
            if host and date and DATE.fullmatch(str(date)):
                return str(host), str(date)
    if path.suffix == ".md":
        for line in path.read_text().splitlines()[:3]:
            if match := HEADING.match(line):
                return match.group(1), match.group(2)
    return None, None


def _measured(path: Path) -> str:
    host, date = recorded(path)
    return NOT_RECORDED if host is None else f"host {host}, measured {date}"


def _json_table(path: Path) -> str:
    """A results file without a table of its own: its top-level numbers as one."""
    report = json.loads(path.read_text())
    rows = [f"| {k} | {v:,.3g} |" for k, v in report.items() if isinstance(v, (int, float))]
    return "\n".join(["| quantity | value |", "|---|---|", *rows])


def sections() -> list[str]:
    found = {p.stem: p for p in RESULTS.glob("*.md") if not p.stem.startswith("_")}
    found.update({p.stem: p for p in RESULTS.glob("*.json")
                  if not p.stem.startswith("_") and p.stem not in found and not p.with_suffix(".md").exists()})
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    out = []
    for name in names:
        path = found[name]
        body = path.read_text() if path.suffix == ".md" else _json_table(path)
        # each file's own headings move two levels down, under this section's
        body = "\n".join("##" + line if line.startswith("#") else line for line in body.strip().splitlines())
        out.append(f"## {name}\n\n_{_measured(path)}_\n\n{body}\n")
    return out


def main() -> None:
    text = ("# Benchmark results\n\nWritten by `make bench` (benchmarks/collect_results.py) from benchmarks/results/. "
            "Timings on a shared machine vary; each benchmark measures its reference in the same run, so read the "
            "ratios.\n\n" + "\n".join(sections()))
    (HERE / "RESULTS.md").write_text(text)
    print(f"wrote {HERE / 'RESULTS.md'} ({text.count(chr(10) + '## ')} benchmarks)")


if __name__ == "__main__":
    main()
