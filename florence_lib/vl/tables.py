"""Table 8 of the paper (VQAv2 test-dev / test-std accuracy) as data, and our rows beside it.

Reference rows transcribed from Yuan et al. 2021 (arXiv 2111.11432v1), labelled as the paper's. Our datasets
get columns of their own: the world (official accuracy reduces to exact match, one certain answer), its blind
and majority baselines, and the consensus VQAv2 subset (exact match after normalisation: the official
10-annotator formula gives 0 with one answer per question).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..evaluation.tables import Row, Table, Value

_T8 = ["test-dev", "test-std"]
_REFERENCE = [("UNITER", 73.82, 74.02), ("Visual Parsing", 74.00, 74.17), ("PixelBERT", 74.45, 74.55),
              ("VILLA", 74.69, 74.87), ("UNIMO", 75.06, 75.27), ("ALBEF", 75.84, 76.04), ("VinVL", 76.52, 76.60),
              ("CLIP-ViL", 76.48, 76.70), ("METER", 77.68, 77.64), ("SimVLM", 80.03, 80.34),
              ("Florence", 80.16, 80.36)]
TABLE8 = Table("Table 8. VQA accuracy (%), VQAv2 test-dev / test-std; our sets in columns of their own", _T8,
               [Row(f"{name} (paper)", {"test-dev": dev, "test-std": std}, reference=True)
                for name, dev, std in _REFERENCE], decimals=2)

COLUMN = {"world": "world", "vqav2": "VQAv2 subset (exact match)"}


def vqa_rows(label: str, records: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Our model and its two baselines, one row each, a column per dataset (accuracy in %)."""
    rows = {k: Row(name, {}) for k, name in (("accuracy", label), ("blind_accuracy", f"{label}: question only"),
                                             ("majority_accuracy", "majority answer per question type"))}
    for r in records:
        column = COLUMN.get(str(r["dataset"]), str(r["dataset"]))
        for key, row in rows.items():
            value: Value = 100 * float(r[key]) if r.get(key) is not None else None
            row.values[column] = value
    return list(rows.values())
