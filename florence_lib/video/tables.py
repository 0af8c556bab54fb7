"""The paper's Tables 9 and 10 as data (rendered with :func:`florence_lib.evaluation.tables.render`).

Reference rows are the paper's (Yuan et al. 2021, arXiv 2111.11432v1), labelled "(paper)"; they were
transcribed without the PDF at hand on this machine, so check a number against the paper before quoting it.
Checked against public text (the search tool, no PDF): Florence's Kinetics-600 top-1 87.8 (the paper's abstract)
and VideoSwin-L's 84.9 / 86.1 K400 / K600 top-1 (the Video Swin abstract). Every other cell, Table 9 included,
is UNVERIFIED: from memory, not from the paper's table.
Our rows are measured on the world, whose columns stand to the right: not comparable with MSR-VTT or Kinetics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..evaluation.tables import Row, Table, Value

_T9 = ["MSR-VTT R@1", "MSR-VTT R@5", "MSR-VTT R@10"]


def _ref(label: str, columns: list[str], values: list[Value]) -> Row:
    return Row(f"{label} (paper)", dict(zip(columns, values, strict=True)), reference=True)


TABLE9 = Table("Table 9. Zero-shot text-to-video retrieval on MSR-VTT 1K-A, recall (%)", _T9, [
    _ref("MIL-NCE", _T9, [9.9, 24.0, 32.4]),
    _ref("MMV", _T9, [9.3, 23.0, 31.1]),
    _ref("VideoCLIP", _T9, [10.4, 22.2, 30.0]),
    _ref("VATT", _T9, [None, None, 29.7]),
    _ref("MCN", _T9, [10.5, 25.2, 33.8]),
    _ref("Frozen-in-Time", _T9, [24.7, 46.9, 57.2]),
    _ref("CLIP-ViT-B/16", _T9, [26.0, 49.4, 60.7]),
    _ref("Florence", _T9, [37.6, 63.8, 72.6]),
])

_T10 = ["Pretraining data", "K400 Top-1", "K400 Top-5", "K400 Views", "K600 Top-1", "K600 Top-5", "K600 Views"]
TABLE10 = Table("Table 10. Action recognition on Kinetics-400/600, accuracy (%); views = clips x crops", _T10, [
    _ref("ViViT-H/16x2", _T10, ["JFT-300M", 84.8, 95.8, "4×3", 85.8, 96.5, "4×3"]),
    _ref("VideoSwin-L", _T10, ["IN-22K", 84.9, 96.7, "10×5", 86.1, 97.3, "10×5"]),
    _ref("TokenLearner 16at18+L/10", _T10, ["JFT-300M", 85.4, 96.3, "4×3", 86.3, 97.0, "4×3"]),
    _ref("Florence-CoSwin-H", _T10, ["FLD-900M", 86.5, 97.3, "4×3", 87.8, 97.8, "4×3"]),
])


def recognition_row(label: str, records: Iterable[Mapping[str, Any]], data: str = "-") -> Row:
    """One of our Table 10 rows: top-1/top-5 (in %) and views per dataset, in columns of their own."""
    values: dict[str, Value] = {"Pretraining data": data}
    for r in records:
        values[f"{r['dataset']} Top-1"] = 100 * float(r["top1"])
        values[f"{r['dataset']} Top-5"] = 100 * float(r["top5"])
        values[f"{r['dataset']} Views"] = str(r.get("views", "-"))
    return Row(label, values)


def video_retrieval_row(label: str, records: Iterable[Mapping[str, Any]]) -> Row:
    """One of our Table 9 rows: text-to-video R@1/5/10 (in %) per dataset."""
    values: dict[str, Value] = {}
    for r in records:
        for k in (1, 5, 10):
            values[f"{r['dataset']} R@{k}"] = 100 * float(r[f"t2v_r{k}"])
    return Row(label, values)
