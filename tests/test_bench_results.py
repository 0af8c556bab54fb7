"""benchmarks/collect_results.py dates each table by what its results file recorded, never by file times."""

import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _collector():
    spec = importlib.util.spec_from_file_location("collect_results", BENCHMARKS / "collect_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_host_and_date_come_from_the_results_file_itself(tmp_path, monkeypatch):
    collect = _collector()
    (tmp_path / "a.json").write_text(json.dumps({"host": "box1", "date": "2026-11-30 10:00 UTC", "x": 1.5}))
    (tmp_path / "a.md").write_text("# A table (box9, 2020-01-01 00:00 UTC)\n\n| x |\n")  # the JSON twin wins
    (tmp_path / "b.md").write_text("# Profile of one step (box2, 2026-11-29 08:15 UTC)\n\ntext\n")
    (tmp_path / "c.json").write_text(json.dumps({"machine": {"platform": "Linux"}, "n": 3}))
    (tmp_path / "d.md").write_text("# No provenance here\n")
    monkeypatch.setattr(collect, "RESULTS", tmp_path)
    assert collect.recorded(tmp_path / "a.md") == ("box1", "2026-11-30 10:00 UTC")
    assert collect.recorded(tmp_path / "b.md") == ("box2", "2026-11-29 08:15 UTC")
    assert collect.recorded(tmp_path / "c.json") == (None, None)
    sections = {s.split("\n", 1)[0]: s for s in collect.sections()}
    assert "host box1, measured 2026-11-30 10:00 UTC" in sections["## a"]
    for name in ("## c", "## d"):  # flagged, not dated by their modification time
        assert collect.NOT_RECORDED in sections[name]
