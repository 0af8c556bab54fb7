"""The main job's runner: numeric order, parameters injected, a failure names the notebook and the cell."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat

from florence_lib.reproduce import list_notebooks, run_series
from florence_lib.runs import RunDir
from florence_lib.series import series_table

ROOT = Path(__file__).resolve().parent.parent


def make_notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nrun_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_list_notebooks_in_numeric_order(tmp_path: Path) -> None:
    for name in ["10_x.ipynb", "02_b.ipynb", "00b_tour.ipynb", "00_overview.ipynb", "notes.ipynb"]:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in list_notebooks(tmp_path)] == [
        "00_overview.ipynb", "00b_tour.ipynb", "02_b.ipynb", "10_x.ipynb"]


def test_series_runs_writes_outputs_and_stops_at_a_failure(tmp_path: Path) -> None:
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    ok = make_notebook(nbs / "00_ok.ipynb", "import json, pathlib\n"
                       "out = pathlib.Path(run_dir) / '00_ok'\nout.mkdir(parents=True, exist_ok=True)\n"
                       "(out / 'metrics.json').write_text(json.dumps({'profile': profile}))")
    bad = make_notebook(nbs / "01_bad.ipynb", "raise ValueError('broken on purpose')")
    never = make_notebook(nbs / "02_never.ipynb", "x = 1")
    run = RunDir(tmp_path / "run")
    summary = run_series([ok, bad, never], run, {"profile": "quick", "run_dir": str(run.path)})
    statuses = [(n["notebook"], n["status"]) for n in summary["notebooks"]]
    assert statuses == [("00_ok.ipynb", "ok"), ("01_bad.ipynb", "failed")]
    assert summary["notebooks"][0]["metrics"] == {"profile": "quick"}
    failed = summary["failed"]
    assert failed["cell"] >= 1 and "broken on purpose" in failed["error"]
    assert (run.path / "00_ok.ipynb").is_file() and not (run.path / "02_never.ipynb").exists()
    assert json.loads((run.path / "summary.json").read_text())["failed"]["notebook"] == "01_bad.ipynb"


def test_readme_lists_the_series() -> None:
    assert series_table() in (ROOT / "README.md").read_text()


def test_prefixed_writer_prefixes_whole_lines() -> None:
    import io

    from florence_lib.reproduce import PrefixedWriter

    sink = io.StringIO()
    w = PrefixedWriter(sink, "02| ")
    w.write("step 1 loss 2.0\nstep 2")
    w.write(" loss 1.5\n")
    assert sink.getvalue() == "02| step 1 loss 2.0\n02| step 2 loss 1.5\n"


def test_jobs_run_independent_notebooks_at_once_and_wait_for_prerequisites(tmp_path: Path) -> None:
    from florence_lib.series import prerequisites

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    body = ("import json, os, pathlib, time\nt0 = time.time()\ntime.sleep(3)\n"
            "out = pathlib.Path(run_dir) / '{stem}'\nout.mkdir(parents=True, exist_ok=True)\n"
            "(out / 'metrics.json').write_text(json.dumps({{'start': t0, 'end': time.time(), "
            "'threads': os.environ.get('OMP_NUM_THREADS')}}))")
    stems = ["00_overview", "00b_data_tour", "01_data_curation", "02_unicl_pretraining"]
    paths = [make_notebook(nbs / f"{s}.ipynb", body.format(stem=s)) for s in stems]
    run = RunDir(tmp_path / "run")
    summary = run_series(paths, run, {"profile": "quick", "run_dir": str(run.path)}, jobs=2)
    assert [n["notebook"] for n in summary["notebooks"]] == [f"{s}.ipynb" for s in stems]  # series order
    times = {Path(n["notebook"]).stem: n["metrics"] for n in summary["notebooks"]}
    assert times["00b_data_tour"]["start"] < times["00_overview"]["end"]  # independent: side by side
    assert times["02_unicl_pretraining"]["start"] >= times["01_data_curation"]["end"]  # reads 01's shards
    cores = max(1, (os.cpu_count() or 1) // 2)
    assert {m["threads"] for m in times.values()} == {os.environ.get("OMP_NUM_THREADS", str(cores))}
    assert prerequisites(["03_zero_shot", "02_unicl_pretraining", "12_results"]) == {
        "03_zero_shot": {"02_unicl_pretraining"}, "02_unicl_pretraining": set(),
        "12_results": {"03_zero_shot", "02_unicl_pretraining"}}


def test_several_jobs_start_the_longest_chain_first(tmp_path: Path) -> None:
    from florence_lib.series import SERIES, critical_paths

    seconds = {e.notebook: e.seconds for e in SERIES}
    chain = critical_paths(["01_data_curation", "02_unicl_pretraining", "03_zero_shot", "12_results"])
    assert chain["01_data_curation"] == sum(seconds[s] for s in chain)  # 01 -> 02 -> 03 -> 12
    assert chain["03_zero_shot"] == seconds["03_zero_shot"] + seconds["12_results"]
    full = critical_paths([e.notebook for e in SERIES])
    assert full["02c_ablations"] > full["00_overview"]  # the long independent one is not left for last
    # numeric order would start 00 and 00b; by chain, 01 (heads 02 -> ...) and 02c go first
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    body = "import json, pathlib, time\nout = pathlib.Path(run_dir) / '{stem}'\nout.mkdir(parents=True)\n" \
           "(out / 'metrics.json').write_text(json.dumps({{'start': time.time()}}))"
    stems = ["00_overview", "00b_data_tour", "01_data_curation", "02c_ablations"]
    paths = [make_notebook(nbs / f"{s}.ipynb", body.format(stem=s)) for s in stems]
    run = RunDir(tmp_path / "run")
    summary = run_series(paths, run, {"profile": "quick", "run_dir": str(run.path)}, jobs=2)
    start = {Path(n["notebook"]).stem: n["metrics"]["start"] for n in summary["notebooks"]}
    assert max(start["01_data_curation"], start["02c_ablations"]) < min(start["00_overview"], start["00b_data_tour"])
