"""Notebook conventions: names, a tagged parameters cell first, only light imports, clean committed outputs."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

from florence_lib.reproduce import NOTEBOOK_NAME, list_notebooks
from florence_lib.series import SERIES

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REQUIRED_PARAMETERS = {"profile", "run_dir", "data_root", "seed"}
# Heavy code lives in florence_lib; a notebook imports it plus display and array libraries.
ALLOWED_IMPORTS = {"florence_lib", "numpy", "matplotlib", "ipywidgets", "IPython", "torch", "PIL", "tqdm", "yaml"}
ABSOLUTE_PATH = re.compile(r"[\"'\s(](/(work|tmp|root|home|Users)/)")


def code_cells(path: Path) -> list[dict]:
    nb = json.loads(path.read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_series_is_present_and_ordered() -> None:
    assert NOTEBOOKS, "no notebooks"
    assert all(NOTEBOOK_NAME.match(p.name) for p in NOTEBOOKS), [p.name for p in NOTEBOOKS]
    assert [p.name for p in list_notebooks()][:1] == ["00_overview.ipynb"]
    known = {e.notebook for e in SERIES}
    assert {p.stem for p in NOTEBOOKS} <= known, "add new notebooks to florence_lib/series.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_tagged_parameters(path: Path) -> None:
    first = code_cells(path)[0]
    assert "parameters" in first["metadata"].get("tags", []), f"{path.name}: first code cell is not tagged"
    names = {t.id for node in ast.walk(ast.parse(source(first))) if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)}
    assert REQUIRED_PARAMETERS <= names, f"{path.name}: parameters cell lacks {REQUIRED_PARAMETERS - names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_imports_nothing_heavy_outside_florence_lib(path: Path) -> None:
    stdlib = set(sys.stdlib_module_names)
    for cell in code_cells(path):
        tree = ast.parse("\n".join(line for line in source(cell).splitlines() if not line.startswith(("%", "!"))))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                assert not isinstance(node, ast.ClassDef), f"{path.name}: class {node.name} belongs in florence_lib"
                if isinstance(node, ast.FunctionDef):
                    assert node.end_lineno - node.lineno < 15, f"{path.name}: {node.name} belongs in florence_lib"
                continue
            for mod in mods:
                top = mod.split(".")[0]
                assert top in ALLOWED_IMPORTS or top in stdlib, f"{path.name}: imports {mod}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_are_clean(path: Path) -> None:
    text = path.read_text()
    assert not ABSOLUTE_PATH.search(text), f"{path.name}: absolute path in committed notebook"
    for cell in code_cells(path):
        assert cell.get("execution_count") is None and not cell.get("outputs"), \
            f"{path.name}: commit notebooks with outputs stripped (executed copies go to runs/)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_has_an_id(path: Path) -> None:
    # without ids papermill's nbformat warns on every run of the series, burying its progress lines
    cells = json.loads(path.read_text())["cells"]
    missing = [i for i, cell in enumerate(cells) if "id" not in cell]
    assert not missing, f"{path.name}: cells {missing} have no id (nbformat.validator.normalize adds them)"
