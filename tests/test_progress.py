"""Logging of long runs: rank 0 only, plain log lines where nobody watches, TensorBoard from metrics.jsonl."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from florence_lib.runs import RunDir, tensorboard_scalars
from florence_lib.training.engine import Engine
from florence_lib.training.progress import resolve_mode

LINE = re.compile(r"^fit step (\d+)/6 loss \d+\.\d{4} lr \d\.\d{2}e[-+]\d{2} images/s \d+\.\d "
                  r"elapsed \d+:\d{2}:\d{2} eta \d+:\d{2}:\d{2}$")


def tiny_engine() -> Engine:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / 10)

    def objective(m: torch.nn.Module, b: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return ((m(b["x"]).squeeze(1) - b["y"]) ** 2).mean(), {}

    return Engine(model, objective, opt, sched, device=torch.device("cpu"))


def batches() -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(5, 4, generator=g), "y": torch.randn(5, generator=g)} for _ in range(6)]


def test_log_lines_every_log_every_steps_on_rank_0(capsys: pytest.CaptureFixture) -> None:
    tiny_engine().fit(batches(), 6, log_every=2, progress="lines", desc="fit")
    lines = capsys.readouterr().out.strip().splitlines()
    assert [int(LINE.match(x).group(1)) for x in lines] == [2, 4, 6], lines
    assert resolve_mode("auto", main_process=False) == "none"  # other ranks draw no bar and print no line
    assert resolve_mode("both", main_process=False) == "none"


def test_auto_mode_prints_lines_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("florence_lib.training.progress.interactive", lambda: False)
    assert resolve_mode("auto") == "lines"
    monkeypatch.setattr("florence_lib.training.progress.interactive", lambda: True)
    assert resolve_mode("auto") == "bar"
    monkeypatch.setenv("FLORENCE_PROGRESS", "none")
    assert resolve_mode("auto") == "none"
    monkeypatch.setenv("FLORENCE_PROGRESS", "loud")
    with pytest.raises(ValueError, match="FLORENCE_PROGRESS"):
        resolve_mode("auto")


def test_tensorboard_events_hold_the_records_of_metrics_jsonl(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    @dataclasses.dataclass
    class Cfg:
        tensorboard: bool = True

    run = RunDir(tmp_path / "run").start(Cfg())
    engine = tiny_engine()
    engine.fit(batches(), 6, run_dir=run, log_every=2, eval_every=3, evaluate=lambda: {"val_loss": 0.5},
               record={"phase": "stage1"}, progress="none")
    train = [r for r in run.metrics() if r["split"] == "train"]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert {"train/loss", "train/lr", "train/grad_norm", "val/val_loss"} <= set(events.Tags()["scalars"])
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in train] == [2, 4, 6]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    assert [e.step for e in events.Scalars("val/val_loss")] == [3, 6]


def test_tensorboard_tags_name_task_and_dataset_not_phase() -> None:
    tags = tensorboard_scalars({"task": "zero_shot", "dataset": "eurosat", "top1": 0.5, "ok": True})
    assert tags == [("metrics/zero_shot/eurosat/top1", 0.5, 0)]
    assert tensorboard_scalars({"phase": "s2", "split": "train", "step": 7, "loss": 1}) == [("train/loss", 1.0, 7)]
