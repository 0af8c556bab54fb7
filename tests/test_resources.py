"""Notebooks, templates and configs are found through package resources, in a checkout and in an installed copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from florence_lib import resources
from florence_lib.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parent.parent


def test_checkout_resources() -> None:
    assert resources.source_root() == ROOT
    assert resources.resource_dir("notebooks") == ROOT / "notebooks"
    assert (resources.resource_dir("cluster") / "job.sbatch").is_file()
    assert (CONFIG_DIR / "pretrain" / "smoke.yaml").is_file()  # configs are package data


def test_installed_layout_is_found_and_runs_go_under_the_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    share = tmp_path / "prefix" / "share" / "florence_lib"
    (share / "cluster").mkdir(parents=True)
    (share / "cluster" / "paper.yaml").write_text("{}")
    monkeypatch.setattr(resources, "source_root", lambda: None)
    monkeypatch.setattr(resources, "installed_roots", lambda: [share])
    monkeypatch.chdir(tmp_path)
    assert resources.resource_dir("cluster") == share / "cluster"
    assert resources.resolve_project_path("cluster/paper.yaml") == share / "cluster" / "paper.yaml"
    assert resources.interactive_runs_root() == tmp_path / "runs" / "interactive"
    with pytest.raises(FileNotFoundError, match="notebooks/ not found .* reinstall florence_lib"):
        resources.resource_dir("notebooks")


def test_pyproject_ships_the_resources_and_the_console_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"florence": "florence_lib.cli:main"}
    data_files = project["tool"]["setuptools"]["data-files"]
    shipped = {Path(p).name for patterns in data_files.values() for pattern in patterns for p in ROOT.glob(pattern)}
    assert {"job.sbatch", "paper.yaml", "local.yaml", "02b_scaling_up.ipynb"} <= shipped
    assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} <= shipped


@pytest.mark.slow
def test_non_editable_install_works_outside_the_checkout(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv (dependencies from this one), run it from an empty folder."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(src)], check=True, capture_output=True, timeout=300)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site_dir = next(env_dir.glob("lib/python*/site-packages"))
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir())
    (site_dir / "deps.pth").write_text(deps + "\n")  # a plain path: the checkout's editable finder stays off
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    str(next((tmp_path / "wheel").glob("*.whl")))], check=True, capture_output=True, timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    probe = ("import florence_lib, florence_lib.resources as r; print(florence_lib.__file__); "
             "print(r.resource_dir('notebooks')); print(r.interactive_runs_root())")
    out = subprocess.run([str(python), "-c", probe], cwd=work, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0].startswith(str(site_dir)) and out[1] == str(env_dir / "share" / "florence_lib" / "notebooks")
    assert out[2] == str(work / "runs" / "interactive")
    r = subprocess.run([str(env_dir / "bin" / "florence"), "launch", "pretrain", "--sbatch", "job.sbatch"], cwd=work,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    script = (work / "job.sbatch").read_text()
    assert f"--config {env_dir}/share/florence_lib/cluster/paper.yaml" in script
    assert (work / "runs" / "florence-pretrain-paper").is_dir() and f"cd {work}" in script
