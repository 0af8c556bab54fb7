"""Run directories record config, commit, versions and seed; seeding makes runs repeatable."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import yaml

from florence_lib.runs import RunDir, read_metrics, seed_everything


@dataclass
class Tiny:
    lr: float = 0.1
    name: str = "x"


def test_run_dir_records_config_meta_and_metrics(tmp_path) -> None:
    run = RunDir(tmp_path / "r").start(Tiny(), seed=7)
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["seed"] == 7 and meta["packages"]["torch"] == "2.14.1"
    assert "git_commit" in meta
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == {"lr": 0.1, "name": "x"}
    run.log({"step": 1, "loss": np.float32(0.5), "acc": torch.tensor(0.25)})
    run.log({"step": 2, "loss": 0.4})
    assert [m["step"] for m in read_metrics(run.path / "metrics.jsonl")] == [1, 2]
    assert run.metrics()[0]["acc"] == 0.25


def test_seed_everything_repeats_random_streams() -> None:
    seed_everything(3)
    a = (np.random.rand(3), torch.rand(3))
    seed_everything(3)
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])
