"""The results report: records placed in the paper's tables, gaps labelled, duplicates named, HTML complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from florence_lib.evaluation.report import ALL_TABLES, build_report, collect_records, report_html


def write(run: Path, notebook: str, records: list[dict]) -> None:
    (run / notebook).mkdir(parents=True, exist_ok=True)
    (run / notebook / "metrics.json").write_text(json.dumps(records))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    write(tmp_path, "03_zero_shot", [
        {"task": "zero_shot", "dataset": "world", "model": "m", "top1": 0.61},
        {"task": "zero_shot", "dataset": "world-heldout", "model": "m", "top1": 0.33},
        {"task": "zero_shot", "dataset": "cifar10_test", "model": "m", "top1": 0.25},
    ])
    write(tmp_path, "10_vqa", [{"task": "vqa", "dataset": "world", "model": "m", "accuracy": 0.7,
                                "blind_accuracy": 0.4}])
    write(tmp_path, "99_extra", [{"task": "something_new", "dataset": "world", "value": 1}])
    write(tmp_path, "00_overview", {"task": "environment", "python": "3.11"})  # one record, no data set
    return tmp_path


def test_present_records_land_in_their_columns(run: Path) -> None:
    report = build_report(collect_records(run))
    t1 = next(t for t in report.tables if t.number == 1)
    assert t1.ours[0].values["CIFAR10"] == pytest.approx(25.0)  # a subset of the paper's column lands in it
    assert t1.ours[0].values["world-heldout"] == pytest.approx(33.0)
    md = t1.markdown()
    assert "| m |" in md and "61.0" in md and "(paper)" in md
    t8 = next(t for t in report.tables if t.number == 8)
    assert t8.ours[0].values["world"] == pytest.approx(70.0)  # the model, then its question-only baseline
    assert t8.ours[1].values["world"] == pytest.approx(40.0)


def test_missing_pieces_are_labelled_gaps(run: Path) -> None:
    report = build_report(collect_records(run))
    t1 = next(t for t in report.tables if t.number == 1)
    assert t1.gaps == ["03_zero_shot (zero_shot) on eurosat: data set absent (no data_root)"]
    t2 = next(t for t in report.tables if t.number == 2)
    assert t2.gaps == ["04_linear_probe (linear_probe): not run in this run directory"] and not t2.ours
    t8 = next(t for t in report.tables if t.number == 8)
    assert t8.gaps == ["10_vqa (vqa) on vqav2: data set absent (no data_root)"]
    assert "gap:" in t2.markdown()
    assert [r["task"] for r in report.unplaced] == ["environment", "something_new"]  # never dropped silently


def test_real_data_gap_says_no_record_when_the_run_had_data(run: Path) -> None:
    (run / "summary.json").write_text(json.dumps({"parameters": {"data_root": "/data"}}))
    t1 = next(t for t in build_report(collect_records(run)).tables if t.number == 1)
    assert t1.gaps == ["03_zero_shot (zero_shot) on eurosat: no record"]


def test_duplicates_keep_the_latest_and_are_named(run: Path) -> None:
    write(run, "03b_zero_shot_again", [{"task": "zero_shot", "dataset": "world", "model": "m", "top1": 0.7}])
    collected = collect_records(run)
    assert collected.duplicates == ["zero_shot / world (03_zero_shot replaced by 03b_zero_shot_again)"]
    world = [r for r in collected.records if r["task"] == "zero_shot" and r["dataset"] == "world"]
    assert [r["top1"] for r in world] == [0.7]
    # a different setting of the same task is not a duplicate
    write(run, "06_few_shot", [{"task": "few_shot", "dataset": "world-sketch", "model": "m", "k_shot": k,
                                "n_way": 5, "accuracy": 0.5} for k in (5, 20)])
    assert len(collect_records(run).duplicates) == 1


def test_bad_metrics_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "03_zero_shot").mkdir()
    (tmp_path / "03_zero_shot" / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="03_zero_shot/metrics.json: not valid JSON"):
        collect_records(tmp_path)
    (tmp_path / "03_zero_shot" / "metrics.json").write_text(json.dumps([{"dataset": "world"}]))  # no task
    with pytest.raises(ValueError, match="record 0"):
        collect_records(tmp_path)
    with pytest.raises(FileNotFoundError):
        collect_records(tmp_path / "nope")


def test_html_holds_every_table_and_inlines_figures(run: Path) -> None:
    (run / "03_zero_shot" / "figures").mkdir()
    (run / "03_zero_shot" / "figures" / "confusion.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    page = report_html(build_report(collect_records(run)), run)
    for table in ALL_TABLES.values():
        assert table.title.split(".")[0] in page
    assert page.count("<h2>Table") == 10
    assert "data:image/png;base64," in page and "gap:" in page and "something_new" in page
    assert "src=\"http" not in page  # self-contained


def test_the_reports_own_records_are_excluded(run: Path) -> None:
    write(run, "12_results", [{"task": "report", "dataset": "run"}])
    collected = collect_records(run, exclude=("12_results",))
    assert "12_results" not in collected.notebooks
    assert all(r["task"] != "report" for r in collected.records)


def test_claims_with_confidence_intervals_are_reported(run: Path) -> None:
    claim = {"task": "ablation_claim", "dataset": "world", "claim": "unicl_vs_clip", "arm_a": "unicl_short",
             "arm_b": "clip_short", "metric": "i2t_r1", "mean_a": 0.30, "ci95_a": 0.02, "mean_b": 0.25,
             "ci95_b": 0.03, "difference": 0.05, "p_value": 0.01, "significant": True}
    arms = [{"task": "ablation", "dataset": "world", "arm": a, "metric": "i2t_r1", "mean": 0.3, "ci95": 0.02}
            for a in ("unicl_short", "clip_short")]
    write(run, "02c_ablations", [claim, {**claim, "metric": "t2i_r1", "significant": False}, *arms])
    report = build_report(collect_records(run))
    assert len(report.claims) == 2 and not any(r["task"].startswith("ablation") for r in report.unplaced)
    md = report.markdown()
    assert "| unicl_vs_clip | i2t_r1 | unicl_short 0.300 +- 0.020 | clip_short 0.250 +- 0.030 | +0.050 | 0.01 | yes |" in md
    assert "significant at 0.05" in report_html(report, run)
