"""The project's files that live beside the package: ``notebooks/`` and ``cluster/`` (templates, launch configs).

In a source checkout they are the checkout's folders. A non-editable ``pip install .`` copies them to
``<prefix>/share/florence_lib/`` (``[tool.setuptools.data-files]`` in pyproject.toml), where this module finds
them; nothing is looked up next to site-packages, and run directories go under the current directory.
"""

from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SHARE = Path("share") / "florence_lib"
RESOURCES = ("notebooks", "cluster")


def source_root() -> Path | None:
    """The source checkout holding this package (it has pyproject.toml and notebooks/), else None."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def installed_roots() -> list[Path]:
    """Where an installed copy's shared files may lie: the environment's data prefix, then the user's."""
    prefixes = [sysconfig.get_path("data"), sys.prefix, site.getuserbase()]
    return [Path(p) / SHARE for p in dict.fromkeys(prefixes)]


def resource_dir(name: str) -> Path:
    """``notebooks`` or ``cluster``: the checkout's folder, else the installed copy; a clear error if neither."""
    if name not in RESOURCES:
        raise ValueError(f"{name!r}: not a florence_lib resource; one of {', '.join(RESOURCES)}")
    root = source_root()
    candidates = ([root / name] if root else []) + [r / name for r in installed_roots()]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(f"{name}/ not found in {', '.join(str(c) for c in candidates)}; reinstall florence_lib "
                            "(pip install .) or run from a source checkout")


def resolve_project_path(path: str | Path) -> Path:
    """A path as the user wrote it: absolute, or relative to the current directory where it exists there, or
    inside a resource folder (``cluster/paper.yaml``) of the checkout or the installed copy."""
    path = Path(path)
    if path.is_absolute() or path.exists() or not path.parts or path.parts[0] not in RESOURCES:
        return path
    try:
        return resource_dir(path.parts[0]).joinpath(*path.parts[1:])
    except FileNotFoundError:
        return path


def interactive_runs_root() -> Path:
    """Where notebooks opened by hand write: the checkout's ``runs/interactive``, else ``./runs/interactive``."""
    root = source_root()
    return (root if root else Path.cwd()) / "runs" / "interactive"
