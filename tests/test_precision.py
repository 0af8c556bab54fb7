"""``precision: auto``: picks the faster precision by probing, leaves the model and RNG untouched, is recorded."""

import json
import time

import pytest
import torch

from florence_lib.config import ConfigError, from_dict, load_config
from florence_lib.training.config import PretrainConfig
from florence_lib.training.precision import BF16_MARGIN, probe_seconds, resolve_precision


class SlowIn:
    """An objective whose forward pass sleeps while autocast is (or is not) on: a machine where that is slower."""

    def __init__(self, slow_bf16: bool) -> None:
        self.slow_bf16 = slow_bf16

    def __call__(self, model, batch):
        if torch.is_autocast_enabled("cpu") == self.slow_bf16:
            time.sleep(0.02)
        return model(batch["image"]).square().mean(), {}


@pytest.mark.parametrize("slow_bf16, expected", [(True, "fp32"), (False, "bf16")])
def test_auto_takes_the_precision_the_probe_measures_faster(slow_bf16, expected):
    model, batch = torch.nn.Linear(4, 2), {"image": torch.randn(16, 4)}
    resolved, info = resolve_precision("auto", torch.device("cpu"), model, SlowIn(slow_bf16), batch)
    assert resolved == expected == info["resolved"] and info["requested"] == "auto"
    assert set(info["probe_seconds"]) == {"fp32", "bf16"}


class SlowFirstBf16:
    """bf16 builds its kernels on its first pass (slow once), then runs faster than fp32."""

    def __init__(self) -> None:
        self.bf16_calls = 0

    def __call__(self, model, batch):
        if torch.is_autocast_enabled("cpu"):
            self.bf16_calls += 1
            time.sleep(0.2 if self.bf16_calls == 1 else 0.0)
        else:
            time.sleep(0.02)
        return model(batch["image"]).square().mean(), {}


def test_a_slow_first_pass_is_warm_up_not_the_verdict():
    model, batch = torch.nn.Linear(4, 2), {"image": torch.randn(16, 4)}
    objective = SlowFirstBf16()
    resolved, info = resolve_precision("auto", torch.device("cpu"), model, objective, batch)
    assert resolved == "bf16" and info["probe_seconds"]["bf16"] < 0.1 and objective.bf16_calls == 3


def test_probe_leaves_gradients_and_rng_as_it_found_them():
    model, batch = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)), {"image": torch.randn(8, 4)}
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    probe_seconds(model, SlowIn(False), batch, "fp32", torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)
    assert all(p.grad is None for p in model.parameters())


def test_explicit_precision_passes_through_and_bad_values_are_refused():
    assert resolve_precision("fp32", torch.device("cpu"))[0] == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp64", torch.device("cpu"))
    assert resolve_precision("auto", torch.device("cpu"))[0] == "fp32"  # nothing to probe
    with pytest.raises(ConfigError, match="precision"):
        from_dict(PretrainConfig, {"precision": "fp8"})


def test_auto_is_the_default_and_pretrain_records_its_choice(tmp_path):
    from florence_lib.training.pretrain import pretrain

    assert PretrainConfig().precision == "auto"
    cfg = load_config(PretrainConfig, command="pretrain", profile="smoke",
                      overrides=["phases=[{name: a, steps: 2}]", "optim.warmup_steps=1", "eval_every=0",
                                 "checkpoint_every=0", "threads=1"])
    assert cfg.precision == "auto"
    pretrain(cfg, tmp_path)
    record = json.loads((tmp_path / "meta.json").read_text())["precision"]
    assert record["requested"] == "auto" and record["resolved"] in ("fp32", "bf16")
    seconds = record["probe_seconds"]  # bf16 only when clearly faster: near-equal timings resolve to fp32
    assert record["resolved"] == ("bf16" if seconds["bf16"] < BF16_MARGIN * seconds["fp32"] else "fp32")
