"""Where and when a benchmark was measured, recorded in its results file (the collector reads it from there).

A file's modification time says when it was last written or checked out, not when it was measured; the host
and CPU say which machine's numbers these are (CPUs differ: AMX or not changes bf16 by 100x), and the load
average how busy the shared machine was.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name and whether it has AMX (``/proc/cpuinfo``; the platform's processor elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown")
    return f"{name}, {'AMX' if 'amx_bf16' in info else 'no AMX'}"


def provenance() -> dict:
    """``{"host", "date", "cpu", "cpus", "load_average"}`` for a results file's top level, taken now."""
    return {"host": os.uname().nodename, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": cpu_model(), "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def headline(report: dict) -> str:
    """``host, date, cpu, load`` for a results table's heading."""
    load = report.get("load_average")
    load = f", load average {load[0]:.1f}" if load else ""
    return f"{report['host']}, {report['date']}, {report.get('cpu', 'cpu not recorded')}{load}"
