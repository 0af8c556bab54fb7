"""environment.yml (conda) and pyproject.toml (pip) pin the same packages at the same versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(requirements: list[str], source: str) -> dict[str, str]:
    pins = {}
    for req in requirements:
        m = PIN.match(req.strip())
        assert m, f"{source}: {req!r} is not pinned with =="
        pins[_normalise(m.group(1))] = m.group(2)
    return pins


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return _pins(reqs, "pyproject.toml")


def conda_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return _pins([r for r in pip_section if not r.startswith("-e")], "environment.yml")


def test_environment_yml_matches_pyproject() -> None:
    py, conda = pyproject_pins(), conda_pins()
    assert set(py) == set(conda), f"only in pyproject: {set(py) - set(conda)}; only in environment.yml: " \
                                  f"{set(conda) - set(py)}"
    differing = {k: (py[k], conda[k]) for k in py if py[k] != conda[k]}
    assert not differing, f"versions differ (pyproject, environment.yml): {differing}"


def test_required_pins_present() -> None:
    py = pyproject_pins()
    assert py["torch"] == "2.14.1" and py["torchvision"] == "0.29.1"
    for name in ("timm", "transformers", "deepspeed", "jupyterlab", "papermill", "matplotlib", "ipywidgets",
                 "nbval", "pytest", "ruff", "open-clip-torch"):
        assert name in py, name
