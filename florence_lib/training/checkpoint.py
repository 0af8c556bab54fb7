"""Checkpoints: safetensors weights, a training-state file and the resolved config, written atomically.

Layout (one directory per saved step, inside a run's ``checkpoints/``)::

    step-00000100/
        model.safetensors   weights; metadata "model" = {"name": preset, "kwargs": {...}} rebuilds the module
        state.pt            optimizer, scheduler, RNG states, step, data position (what exact resume needs)
        config.yaml         the run's resolved config

A checkpoint is first written to ``step-XXXXXXXX.tmp`` and renamed into place, so a run killed while saving
never leaves a half-written checkpoint that :func:`latest_checkpoint` would pick up.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from ..config import to_dict

WEIGHTS, STATE, CONFIG = "model.safetensors", "state.pt", "config.yaml"
_STEP_DIR = re.compile(r"^step-(\d+)$")


# ----------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, in a form ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------- save
def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    *,
    step: int,
    model_spec: Mapping[str, Any],
    config: Any = None,
    state: Mapping[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write ``directory/step-XXXXXXXX/`` atomically and return it; keep only the newest ``keep`` if given.

    ``model_spec`` is ``{"name": preset, "kwargs": {...}}`` such that ``create_model(name, **kwargs)`` rebuilds
    ``model``; ``config`` is a config dataclass or mapping; ``state`` is the engine's training state.
    """
    directory = Path(directory)
    final = directory / checkpoint_name(step)
    tmp = directory / (final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / WEIGHTS), metadata={"model": json.dumps(dict(model_spec)), "step": str(step)})
    if state is not None:
        torch.save(dict(state), tmp / STATE)
    if config is not None:
        (tmp / CONFIG).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
    if final.exists():  # saving the same step again (e.g. the final step after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep is not None:
        for old in list_checkpoints(directory)[:-keep]:
            shutil.rmtree(old)
    return final


# ----------------------------------------------------------------------------------------------- find
def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint was saved at."""
    ckpt = resolve_checkpoint(path)
    return int(_STEP_DIR.match(ckpt.name).group(1))


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (temporary ``.tmp`` directories are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _STEP_DIR.match(p.name) and (p / WEIGHTS).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint in ``directory`` (a run's ``checkpoints/``, or the run dir itself)."""
    directory = Path(directory)
    found = list_checkpoints(directory) or list_checkpoints(directory / "checkpoints")
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint dir, its weights file, a ``checkpoints/`` dir or a run dir."""
    path = Path(path)
    if path.is_file() and path.name == WEIGHTS:
        return path.parent
    if (path / WEIGHTS).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(f"{path}: no checkpoint found (expected {WEIGHTS}, step-*/ or checkpoints/step-*/)")
    return latest


# ----------------------------------------------------------------------------------------------- load
def read_model_spec(path: str | Path) -> dict[str, Any]:
    """``{"name", "kwargs"}`` stored with the weights: enough to rebuild the module without the config."""
    ckpt = resolve_checkpoint(path)
    with safe_open(str(ckpt / WEIGHTS), framework="pt") as f:
        meta = f.metadata() or {}
    if "model" not in meta:
        raise ValueError(f"{ckpt / WEIGHTS}: no 'model' metadata; was it written by save_checkpoint?")
    return json.loads(meta["model"])


def checkpoint_image_size(path: str | Path) -> int | None:
    """The image side the checkpoint was trained at last (its final phase's), or None where not recorded."""
    size = read_model_spec(path).get("image_size")
    return int(size) if size is not None else None


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(resolve_checkpoint(path) / WEIGHTS), device=str(device))


def load_training_state(path: str | Path) -> dict[str, Any]:
    ckpt = resolve_checkpoint(path)
    if not (ckpt / STATE).is_file():
        raise FileNotFoundError(f"{ckpt}: no {STATE}; it holds weights only and cannot be resumed")
    return torch.load(ckpt / STATE, map_location="cpu", weights_only=True)


def load_config_dict(path: str | Path) -> dict[str, Any]:
    ckpt = resolve_checkpoint(path)
    file = ckpt / CONFIG
    return yaml.safe_load(file.read_text(encoding="utf-8")) if file.is_file() else {}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at ``path`` (checkpoint dir, weights file, or run dir) and return it with its config.

    The model is rebuilt from the stored preset name and kwargs with ``florence_lib.models.create_model`` and is
    returned in eval mode; the config is the run's resolved config as a plain dict.
    """
    from ..models import create_model

    spec = read_model_spec(path)
    model = create_model(spec["name"], **spec.get("kwargs", {}))
    load_model(model, str(resolve_checkpoint(path) / WEIGHTS), strict=True)
    return model.to(device).eval(), load_config_dict(path)
