"""Tables 6 (object detection) and 7 (zero-shot detection) in the paper's layout, with our rows beside.

Reference cells are the paper's (Yuan et al. 2021, arXiv 2111.11432) and labelled so. Only numbers checked
against the paper's text are filled in: COCO test-dev 62.4 mAP for Florence-CoSwin-H is stated in its abstract.
The remaining reference cells (COCO miniVal, Objects365, Visual Genome; the 11 ODinW sets of Table 7) are
left as "-": no copy of the paper's tables was at hand where this was written, and a wrong number in a
reference row is worse than a gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..evaluation.tables import Row, Table, render

_T6 = ["COCO miniVal", "COCO test-Dev", "Objects365", "Visual Genome"]
TABLE6 = Table("Table 6. Object detection, AP (%)", _T6, [
    Row("Florence-CoSwin-H (paper)", {"COCO test-Dev": 62.4}, reference=True),
])

_T7 = ["Aquarium", "BCCD", "Chess Pieces", "Mask Wearing", "Oxford Pets", "Packages", "Pistols", "PKLot",
       "Pothole", "Thermal", "Wildfire Smoke"]
TABLE7 = Table("Table 7. Zero-shot object detection, AP50 (%)", _T7, [
    Row("DyHead-Swin-L, supervised (paper)", {}, reference=True),
    Row("Florence-CoSwin-H, zero-shot (paper)", {}, reference=True),
])

_COLUMN = {"world": "world (ours)", "coco": "COCO val subset (ours)", "merged": "merged (ours)",
           "world-heldout": "world held-out (ours)"}


def _pct(v: Any) -> float | None:
    return None if v is None else 100 * float(v)


def detection_row(label: str, records: Iterable[Mapping[str, Any]], metric: str = "AP") -> Row:
    """Our row of Table 6 from ``{"task": "detection", "dataset", "AP", ...}`` records, in percent."""
    values = {_COLUMN.get(r["dataset"], r["dataset"]): _pct(r.get(metric)) for r in records
              if r.get("task") == "detection"}
    return Row(label, values)


def zero_shot_detection_rows(label: str, records: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Our rows of Table 7 (AP50 %): the text-classified proposals and the text-free baseline."""
    records = [r for r in records if r.get("task") == "zero_shot_detection"]
    ours = {_COLUMN.get(r["dataset"], r["dataset"]): _pct(r["AP50"]) for r in records}
    base = {_COLUMN.get(r["dataset"], r["dataset"]): _pct(r["baseline_AP50"]) for r in records}
    return [Row(label, ours), Row("most-frequent-class baseline, same proposals", base)]


__all__ = ["TABLE6", "TABLE7", "detection_row", "render", "zero_shot_detection_rows"]
