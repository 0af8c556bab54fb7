"""The paper's Tables 1-5 as data, and rendering of our results beside them in the paper's layout.

Reference rows are transcribed from Yuan et al. 2021 (arXiv 2111.11432v1) and are always labelled as the
paper's; our rows come from flat metrics records (``{"task": ..., "dataset": ..., "top1": 0.41, ...}``) and
are labelled by checkpoint. A dataset of ours that is a subset of a paper column (e.g. 1,000 CIFAR-10 test
images) lands in that column; any other dataset (the world, a small COCO gallery, whose recall is not
comparable with a 5K gallery) gets a column of its own to the right.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Value = float | str | None


@dataclass
class Row:
    label: str
    values: dict[str, Value]
    section: str = ""  # e.g. "5-shot" (Table 4) or "Zero-shot" (Table 5)
    reference: bool = False  # a number published in the paper, not measured here


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    decimals: int = 1
    mean_of: list[str] = field(default_factory=list)  # columns averaged into a "mean" column (Table 4)


def _ref(section: str, label: str, columns: Sequence[str], values: Sequence[Value]) -> Row:
    return Row(f"{label} (paper)", dict(zip(columns, values, strict=True)), section, reference=True)


_T1 = ["Food101", "CIFAR10", "CIFAR100", "SUN397", "Stanford Cars", "FGVC Aircraft", "VOC2007", "DTD",
       "Oxford Pets", "Caltech101", "Flowers102", "ImageNet"]
TABLE1 = Table("Table 1. Zero-shot transfer, image classification top-1 accuracy (%)", _T1, [
    _ref("", "CLIP-ResNet-50x64", _T1,
         [91.8, 86.8, 61.3, 48.9, 76.0, 35.6, 83.8, 53.4, 93.4, 90.6, 77.3, 73.6]),
    _ref("", "CLIP-ViT-L/14 (@336pix)", _T1,
         [93.8, 95.7, 77.5, 68.4, 78.8, 37.2, 84.3, 55.7, 93.5, 92.8, 78.3, 76.2]),
    _ref("", "FLIP-ViT-L/14", _T1, [92.2, 95.7, 75.3, 73.1, 70.8, 60.2, None, 60.7, 92.0, 93.0, 90.1, 78.3]),
    _ref("", "Florence-CoSwin-H (@384pix)", _T1,
         [95.1, 94.6, 77.6, 77.0, 93.2, 55.5, 85.5, 66.4, 95.9, 94.7, 86.2, 83.7]),
])

_T2 = _T1[:-1]
TABLE2 = Table("Table 2. Linear probe, image classification accuracy (%)", _T2, [
    _ref("", "SimCLRv2-ResNet-152x3", _T2,
         [83.6, 96.8, 84.5, 69.1, 68.5, 63.1, 86.7, 80.5, 92.6, 94.9, 96.3]),
    _ref("", "ViT-L/16 (@384pix)", _T2, [87.4, 97.9, 89.0, 74.9, 62.5, 52.2, 86.1, 75.0, 92.9, 94.7, 99.3]),
    _ref("", "EfficientNet-L2 (@800pix)", _T2,
         [92.0, 98.7, 89.0, 75.7, 75.5, 68.4, 89.4, 82.5, 95.6, 94.7, 97.9]),
    _ref("", "CLIP-ResNet-50x64", _T2, [94.8, 94.1, 78.6, 81.1, 90.5, 67.7, 88.9, 82.0, 94.5, 95.4, 98.9]),
    _ref("", "CLIP-ViT-L/14 (@336pix)", _T2,
         [95.9, 97.9, 87.4, 82.2, 91.5, 71.6, 89.9, 83.0, 95.1, 96.0, 99.2]),
    _ref("", "Florence-CoSwin-H (@384pix)", _T2,
         [96.2, 97.6, 87.1, 84.2, 95.7, 83.9, 90.5, 86.0, 96.4, 96.6, 99.7]),
])

_T3 = ["Params", "Data", "Top-1", "Top-5"]
TABLE3 = Table("Table 3. Classification fine-tuning on ImageNet-1K, accuracy (%)", _T3, [
    _ref("", "BiT-L-ResNet152x4", _T3, ["928M", "300M", 87.54, 98.46]),
    _ref("", "ALIGN-Efficient-L2", _T3, ["480M", "1800M", 88.64, 98.67]),
    _ref("", "ViT-G/14", _T3, ["1843M", "3000M", 90.45, None]),
    _ref("", "CoAtNet-7", _T3, ["2440M", "3000M", 90.88, None]),
    _ref("", "Florence-CoSwin-H", _T3, ["637M", "900M", 90.05, 99.02]),
], decimals=2)

_T4 = ["ISIC", "EuroSAT", "CropD", "ChestX"]
TABLE4 = Table("Table 4. CD-FSL benchmark, 5-way accuracy (%)", [*_T4, "mean"], [
    _ref("5-shot", "CW", [*_T4, "mean"], [57.4, 88.1, 96.6, 29.7, 68.0]),
    _ref("5-shot", "Florence", [*_T4, "mean"], [57.1, 90.0, 97.7, 29.3, 68.5]),
    _ref("20-shot", "CW", [*_T4, "mean"], [68.1, 94.7, 99.2, 38.3, 75.1]),
    _ref("20-shot", "Florence", [*_T4, "mean"], [72.9, 95.8, 99.3, 37.5, 76.4]),
    _ref("50-shot", "CW", [*_T4, "mean"], [74.1, 96.9, 99.7, 44.4, 78.8]),
    _ref("50-shot", "Florence", [*_T4, "mean"], [78.3, 97.1, 99.6, 42.8, 79.5]),
], mean_of=_T4)

_T5 = [f"{d} {way} R@{k}" for d in ("Flickr30K", "MSCOCO") for way in ("I→T", "T→I") for k in (1, 5)]
TABLE5 = Table("Table 5. Image-text retrieval recall (%), Flickr30K 1K test and MSCOCO 5K test", _T5, [
    _ref("Zero-shot", "ImageBERT", _T5, [70.7, 90.2, 54.3, 79.6, 44.0, 71.2, 32.3, 59.0]),
    _ref("Zero-shot", "UNITER", _T5, [83.6, 95.7, 68.7, 89.2, None, None, None, None]),
    _ref("Zero-shot", "CLIP", _T5, [88.0, 98.7, 68.7, 90.6, 58.4, 81.5, 37.8, 62.4]),
    _ref("Zero-shot", "ALIGN", _T5, [88.6, 98.7, 75.7, 93.8, 58.6, 83.0, 45.6, 69.8]),
    _ref("Zero-shot", "FLIP", _T5, [89.8, 99.2, 75.0, 93.4, 61.3, 84.3, 45.9, 70.6]),
    _ref("Zero-shot", "Florence", _T5, [90.9, 99.1, 76.7, 93.6, 64.7, 85.9, 47.2, 71.4]),
    _ref("Fine-tuned", "GPO", _T5, [88.7, 98.9, 76.1, 94.5, 68.1, 90.2, 52.7, 80.2]),
    _ref("Fine-tuned", "UNITER", _T5, [87.3, 98.0, 75.6, 94.1, 65.7, 88.6, 52.9, 79.9]),
    _ref("Fine-tuned", "ERNIE-ViL", _T5, [88.1, 98.0, 76.7, 93.6, None, None, None, None]),
    _ref("Fine-tuned", "VILLA", _T5, [87.9, 97.5, 76.3, 94.2, None, None, None, None]),
    _ref("Fine-tuned", "Oscar", _T5, [None, None, None, None, 73.5, 92.2, 57.5, 82.8]),
    _ref("Fine-tuned", "ALIGN", _T5, [95.3, 99.8, 84.9, 97.4, 77.0, 93.5, 59.9, 83.3]),
    _ref("Fine-tuned", "FLIP", _T5, [96.6, 100.0, 87.1, 97.7, 78.9, 94.4, 61.2, 84.3]),
    _ref("Fine-tuned", "Florence", _T5, [97.2, 99.9, 87.9, 98.1, 81.8, 95.2, 63.2, 85.7]),
])

TABLES = {1: TABLE1, 2: TABLE2, 3: TABLE3, 4: TABLE4, 5: TABLE5}

DATASET_COLUMNS = {
    "cifar10_test": "CIFAR10", "cifar10": "CIFAR10", "imagenet": "ImageNet",
    "isic2018": "ISIC", "eurosat": "EuroSAT", "plantvillage_apple": "CropD", "chestx14": "ChestX",
}
"""Our dataset name -> the paper column it is a subset of (classification only; see the module docstring)."""


def classification_row(label: str, records: Iterable[Mapping[str, Any]], metric: str = "top1",
                       section: str = "", columns: Mapping[str, str] = DATASET_COLUMNS) -> Row:
    """One of our rows: ``metric`` (a fraction) of each record, in %, under its dataset's paper column."""
    values: dict[str, Value] = {}
    for r in records:
        values[columns.get(str(r["dataset"]), str(r["dataset"]))] = 100 * float(r[metric])
    return Row(label, values, section)


def retrieval_row(label: str, records: Iterable[Mapping[str, Any]], section: str = "Zero-shot") -> Row:
    """One of our Table 5 rows: R@1/R@5 both ways per dataset, each dataset in columns of its own."""
    values: dict[str, Value] = {}
    for r in records:
        for way, key in (("I→T", "i2t"), ("T→I", "t2i")):
            for k in (1, 5):
                values[f"{r['dataset']} {way} R@{k}"] = 100 * float(r[f"{key}_r{k}"])
    return Row(label, values, section)


def few_shot_rows(label: str, records: Iterable[Mapping[str, Any]],
                  columns: Mapping[str, str] = DATASET_COLUMNS, n_way: int = 5) -> list[Row]:
    """Our Table 4 rows, one per shot count. A set too small for ``n_way``-way episodes shows its accuracy
    with the ways it could afford (e.g. ``"61.2 (4-way)"``, not comparable and left out of the mean), or
    ``"n/a"`` where no episode was possible."""
    rows: dict[int, Row] = {}
    for r in records:
        k = int(r["k_shot"])
        row = rows.setdefault(k, Row(label, {}, f"{k}-shot"))
        column = columns.get(str(r["dataset"]), str(r["dataset"]))
        if r.get("accuracy") is None:
            row.values[column] = "n/a"
        elif int(r["n_way"]) != n_way:
            row.values[column] = f"{100 * float(r['accuracy']):.1f} ({r['n_way']}-way)"
        else:
            row.values[column] = 100 * float(r["accuracy"])
    return [rows[k] for k in sorted(rows)]


def finetune_row(label: str, records: Iterable[Mapping[str, Any]], params: str = "-", data: str = "-") -> Row:
    """One of our Table 3 rows: model and data scale, then top-1/top-5 per fine-tuning dataset (ImageNet in
    the paper's own columns, any other set in columns of its own)."""
    values: dict[str, Value] = {"Params": params, "Data": data}
    for r in records:
        prefix = "" if r["dataset"] == "imagenet" else f"{r['dataset']} "
        values[f"{prefix}Top-1"] = 100 * float(r["top1"])
        values[f"{prefix}Top-5"] = 100 * float(r["top5"])
    return Row(label, values)


def _fmt(v: Value, decimals: int) -> str:
    if v is None:
        return "-"
    return v if isinstance(v, str) else f"{v:.{decimals}f}"


def render(table: Table, ours: Sequence[Row] = (), include_reference: bool = True) -> str:
    """A markdown table in the paper's layout: its rows per section, our rows after the paper's in the same
    section, and columns the paper lacks appended on the right."""
    extra = [c for r in ours for c in r.values if c not in table.columns and c != "mean"]
    columns = table.columns + list(dict.fromkeys(extra))
    sections = list(dict.fromkeys([r.section for r in table.rows] + [r.section for r in ours]))
    with_section = any(sections)
    head = (["", "Model"] if with_section else ["Model"]) + columns
    lines = [f"**{table.title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for section in sections:
        rows = [r for r in table.rows if r.section == section and include_reference]
        rows += [r for r in ours if r.section == section]
        for i, r in enumerate(rows):
            values = dict(r.values)
            if table.mean_of and "mean" not in values and all(isinstance(values.get(c), float)
                                                               for c in table.mean_of):
                values["mean"] = sum(float(values[c]) for c in table.mean_of) / len(table.mean_of)
            cells = [_fmt(values.get(c), table.decimals) for c in columns]
            lead = [section if i == 0 else "", r.label] if with_section else [r.label]
            lines.append("| " + " | ".join(lead + cells) + " |")
    return "\n".join(lines)
