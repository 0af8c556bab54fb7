"""A run's results in the paper's layout: every notebook's metrics records, placed in Tables 1-10, gaps labelled.

:func:`collect_records` reads ``<run>/<notebook>/metrics.json`` of any run directory (the quick main job, a
cluster run, a mix of both), :func:`build_report` places the records in the paper's tables beside the paper's
published rows and says, for every piece a table expects, whether it is there, was not run, or could not run
because its data set was absent. Nothing is dropped silently: a record no table takes is listed as such, and a
record measured twice (the same task, data set, model and setting) keeps its latest value with the duplicate
named. :func:`report_html` turns the result into one self-contained HTML page (figures inline).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..detection.tables import TABLE6, TABLE7, detection_row, zero_shot_detection_rows
from ..video.tables import TABLE9, TABLE10, recognition_row, video_retrieval_row
from ..vl.tables import TABLE8, vqa_rows
from .tables import (
    TABLES,
    Row,
    Table,
    classification_row,
    few_shot_rows,
    finetune_row,
    render,
    retrieval_row,
)

Record = dict[str, Any]
SETTING_KEYS = ("k_shot", "n_way", "features", "mode", "split", "protocol", "arm", "claim", "metric")
"""Record fields that distinguish two measurements of the same task on the same data set."""


@dataclass
class Collected:
    """Every record of a run, each tagged with its notebook; ``duplicates`` names the replaced ones."""

    records: list[Record]
    duplicates: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    data_root: str | None = None


def record_key(r: Mapping[str, Any]) -> tuple:
    return (r.get("task"), r.get("dataset"), r.get("model"), *(r.get(k) for k in SETTING_KEYS))


def collect_records(run_dir: str | Path, exclude: Sequence[str] = ()) -> Collected:
    """The metrics records of every ``<run_dir>/*/metrics.json`` (a list of records or a single record), in
    notebook order, but for the notebooks named in ``exclude`` (the report's own); where two records share
    :func:`record_key` the later one wins and the earlier is listed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run directory")
    kept: dict[tuple, Record] = {}
    duplicates, notebooks = [], []
    for path in sorted(run_dir.glob("*/metrics.json")):
        if path.parent.name in exclude:
            continue
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        notebook = path.parent.name
        notebooks.append(notebook)
        for i, r in enumerate(loaded if isinstance(loaded, list) else [loaded]):
            if not isinstance(r, dict) or "task" not in r:
                raise ValueError(f"{path}: record {i} is not a {{'task': ..., 'dataset': ..., ...}} mapping")
            r = {"dataset": "-", **r}  # a run-level record (e.g. the environment) names no data set
            key = record_key(r)
            if key in kept:
                duplicates.append(f"{r['task']} / {r['dataset']} ({kept[key]['notebook']} replaced by {notebook})")
            kept[key] = {**r, "notebook": notebook}
    data_root = None
    summary = run_dir / "summary.json"
    if summary.is_file():
        data_root = json.loads(summary.read_text()).get("parameters", {}).get("data_root")
    return Collected(list(kept.values()), duplicates, notebooks, data_root)


# --------------------------------------------------------------------------------------------- tables 6-10
# Each adapter keeps its tables (reference rows and row builders) beside its code; the report only places them.
ALL_TABLES: dict[int, Table] = {**TABLES, 6: TABLE6, 7: TABLE7, 8: TABLE8, 9: TABLE9, 10: TABLE10}


# ------------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Expected:
    """What a table expects from a run: ``task`` records from ``notebook``, on these data sets."""

    notebook: str
    task: str
    world: tuple[str, ...] = ("world",)
    real: tuple[str, ...] = ()


RowMaker = Callable[[str, list[Record]], list[Row]]


@dataclass(frozen=True)
class TablePlan:
    number: int
    expected: tuple[Expected, ...]
    rows: RowMaker


def _by_task(records: list[Record], task: str) -> list[Record]:
    return [r for r in records if r["task"] == task]


PLANS: tuple[TablePlan, ...] = (
    TablePlan(1, (Expected("03_zero_shot", "zero_shot", ("world", "world-heldout"), ("cifar10_test", "eurosat")),),
              lambda m, rs: [classification_row(m, _by_task(rs, "zero_shot"))]),
    TablePlan(2, (Expected("04_linear_probe", "linear_probe", ("world",), ("cifar10_test", "eurosat")),),
              lambda m, rs: [classification_row(m, _by_task(rs, "linear_probe"))]),
    TablePlan(3, (Expected("05_finetuning", "finetune_unicl", ("world",), ("eurosat",)),
                  Expected("05_finetuning", "finetune_linear", ("world",), ("eurosat",))),
              lambda m, rs: [finetune_row(f"{m}, UniCL loss + prompts", _by_task(rs, "finetune_unicl")),
                             finetune_row(f"{m}, linear head", _by_task(rs, "finetune_linear"))]),
    TablePlan(4, (Expected("06_few_shot", "few_shot", ("world-sketch", "world-thermal", "world-xray"),
                           ("isic2018", "eurosat", "plantvillage_apple", "chestx14")),),
              lambda m, rs: few_shot_rows(m, _by_task(rs, "few_shot"))),
    TablePlan(5, (Expected("07_retrieval", "retrieval", ("world",), ("coco",)),
                  Expected("07_retrieval", "retrieval_finetuned", ("world",), ())),
              lambda m, rs: [retrieval_row(m, _by_task(rs, "retrieval"), "Zero-shot"),
                             retrieval_row(m, _by_task(rs, "retrieval_finetuned"), "Fine-tuned")]),
    TablePlan(6, (Expected("08_detection", "detection", ("world",), ("coco",)),),
              lambda m, rs: [detection_row(m, _by_task(rs, "detection"))]),
    TablePlan(7, (Expected("09_zero_shot_detection", "zero_shot_detection", ("world-heldout",)),),
              lambda m, rs: zero_shot_detection_rows(m, rs)),
    TablePlan(8, (Expected("10_vqa", "vqa", ("world",), ("vqav2",)),),
              lambda m, rs: vqa_rows(m, _by_task(rs, "vqa"))),
    TablePlan(9, (Expected("11_video", "video_retrieval"), Expected("11_video", "video_retrieval_meanp")),
              lambda m, rs: [video_retrieval_row(f"{m}, inflated 3D", _by_task(rs, "video_retrieval")),
                             video_retrieval_row(f"{m}, frame mean (meanP)", _by_task(rs, "video_retrieval_meanp"))]),
    TablePlan(10, (Expected("11_video", "action_recognition", ("world",)),
                   Expected("11_video", "action_recognition_scratch", ("world",))),
              lambda m, rs: [recognition_row(f"{m}, inflated", _by_task(rs, "action_recognition"), data="world"),
                             recognition_row(f"{m}, from scratch", _by_task(rs, "action_recognition_scratch"))]),
)


@dataclass
class TableResult:
    number: int
    table: Table
    ours: list[Row]
    gaps: list[str]

    def markdown(self) -> str:
        text = render(self.table, self.ours)
        if self.gaps:
            text += "\n\n" + "\n".join(f"- *gap:* {g}" for g in self.gaps)
        return text


CLAIM_TASK = "ablation_claim"
"""Notebook 02's records of the paper's claims (UniCL vs CLIP, long vs short captions, ...), arm a against b."""


def claims_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """The claims as a table: each arm's mean +- 95% CI, the difference, Welch's p and the verdict at 0.05."""
    if not records:
        return ""
    lines = ["**The paper's claims, measured (notebook 02; mean +- 95% CI over seeds)**", "",
             "| claim | metric | arm a | arm b | a - b | p | significant |", "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['claim']} | {r['metric']} | {r['arm_a']} {r['mean_a']:.3f} +- {r['ci95_a']:.3f} | "
                     f"{r['arm_b']} {r['mean_b']:.3f} +- {r['ci95_b']:.3f} | {r['difference']:+.3f} | "
                     f"{r['p_value']:.3g} | {'yes' if r['significant'] else 'no'} |")
    return "\n".join(lines)


@dataclass
class Report:
    tables: list[TableResult]
    unplaced: list[Record]
    duplicates: list[str]
    claims: list[Record] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [t.markdown() for t in self.tables]
        if self.claims:
            parts.append(claims_markdown(self.claims))
        if self.unplaced:
            parts.append("**Records no table takes**\n\n" + "\n".join(
                f"- {r['notebook']}: {r['task']} / {r['dataset']}" for r in self.unplaced))
        if self.duplicates:
            parts.append("**Measured twice (the later value is shown)**\n\n" +
                         "\n".join(f"- {d}" for d in self.duplicates))
        return "\n\n".join(parts)


def _gaps(expected: Expected, records: list[Record], collected: Collected) -> list[str]:
    got = {r["dataset"] for r in records if r["task"] == expected.task}
    ran = expected.notebook in collected.notebooks
    where = f"{expected.notebook} ({expected.task})"
    if not ran:
        return [f"{where}: not run in this run directory"]
    gaps = [f"{where} on {d}: no record" for d in expected.world if d not in got]
    for d in expected.real:
        if d not in got:
            reason = "data set absent (no data_root)" if collected.data_root is None else "no record"
            gaps.append(f"{where} on {d}: {reason}")
    return gaps


def _model_label(records: list[Record]) -> str:
    models = list(dict.fromkeys(str(r["model"]) for r in records if r.get("model")))
    return " / ".join(models) if models else "ours"


def build_report(collected: Collected) -> Report:
    """Every table of the paper with our rows and its gaps; the records that no table places."""
    placed: set[int] = set()
    results = []
    for plan in PLANS:
        tasks = {e.task for e in plan.expected}
        records = [r for r in collected.records if r["task"] in tasks]
        placed.update(id(r) for r in records)
        ours = [row for row in plan.rows(_model_label(records), records) if row.values] if records else []
        gaps = [g for e in plan.expected for g in _gaps(e, records, collected)]
        results.append(TableResult(plan.number, ALL_TABLES[plan.number], ours, gaps))
    claims = [r for r in collected.records if r["task"] == CLAIM_TASK]
    placed.update(id(r) for r in collected.records if r["task"] in (CLAIM_TASK, "ablation"))
    unplaced = [r for r in collected.records if id(r) not in placed]
    return Report(results, unplaced, collected.duplicates, claims)


# -------------------------------------------------------------------------------------------------- HTML
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
          "tr.ref td{color:#666}img{max-width:100%;border:1px solid #eee}"
          "li.gap{color:#8a6d3b}")


def _fmt(v: Any, decimals: int) -> str:
    return "-" if v is None else v if isinstance(v, str) else f"{v:.{decimals}f}"


def table_html(result: TableResult) -> str:
    t, ours = result.table, result.ours
    extra = [c for r in ours for c in r.values if c not in t.columns and c != "mean"]
    columns = t.columns + list(dict.fromkeys(extra))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", "Model", *columns])
    body = []
    for r in [*t.rows, *ours]:
        cells = "".join(f"<td>{html.escape(_fmt(r.values.get(c), t.decimals))}</td>" for c in columns)
        cls = ' class="ref"' if r.reference else ""
        body.append(f"<tr{cls}><td>{html.escape(r.section)}</td><td>{html.escape(r.label)}</td>{cells}</tr>")
    gaps = "".join(f'<li class="gap">gap: {html.escape(g)}</li>' for g in result.gaps)
    return (f"<h2>{html.escape(t.title)}</h2><table><tr>{head}</tr>{''.join(body)}</table>"
            + (f"<ul>{gaps}</ul>" if gaps else ""))


def _figures_html(run_dir: Path) -> str:
    parts = []
    for png in sorted(run_dir.glob("*/figures/*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        caption = html.escape(f"{png.parent.parent.name}: {png.stem}")
        parts.append(f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{caption}</figcaption></figure>")
    return "<h2>Figures</h2>" + "".join(parts) if parts else ""


def report_html(report: Report, run_dir: str | Path, title: str = "Florence reproduction: results",
                preamble: str = "") -> str:
    """One self-contained page: ``preamble`` (HTML), every table with its gaps, unplaced records, figures."""
    run_dir = Path(run_dir)
    sections = [table_html(t) for t in report.tables]
    if report.claims:
        rows = "".join(
            f"<tr><td>{html.escape(str(r['claim']))}</td><td>{html.escape(str(r['metric']))}</td>"
            f"<td>{html.escape(str(r['arm_a']))} {r['mean_a']:.3f} ± {r['ci95_a']:.3f}</td>"
            f"<td>{html.escape(str(r['arm_b']))} {r['mean_b']:.3f} ± {r['ci95_b']:.3f}</td>"
            f"<td>{r['difference']:+.3f}</td><td>{r['p_value']:.3g}</td>"
            f"<td>{'yes' if r['significant'] else 'no'}</td></tr>" for r in report.claims)
        sections.append("<h2>The paper's claims, measured (mean ± 95% CI over seeds)</h2><table><tr><th>claim</th>"
                        "<th>metric</th><th>arm a</th><th>arm b</th><th>a - b</th><th>p (Welch)</th>"
                        f"<th>significant at 0.05</th></tr>{rows}</table>")
    if report.unplaced:
        sections.append("<h2>Records no table takes</h2><ul>" + "".join(
            f"<li>{html.escape(r['notebook'])}: {html.escape(str(r['task']))} / {html.escape(str(r['dataset']))}"
            "</li>" for r in report.unplaced) + "</ul>")
    if report.duplicates:
        sections.append("<h2>Measured twice (the later value is shown)</h2><ul>" +
                        "".join(f"<li>{html.escape(d)}</li>" for d in report.duplicates) + "</ul>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{preamble}"
            f"<p>Run directory: <code>{html.escape(run_dir.name)}</code></p>{''.join(sections)}"
            f"{_figures_html(run_dir)}</body></html>")
