"""Config validation: unknown keys, wrong types and out-of-range values are refused with the key named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from florence_lib.config import ConfigError, field, from_dict, load_config, parse_override, to_dict


@dataclass
class Optim:
    lr: float = field(1e-3, min=0.0, max=1.0)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = field(10, min=0)


@dataclass
class Phase:
    name: str = "stage1"
    steps: int = field(100, min=1)


@dataclass
class Demo:
    model: str = "unicl_tiny"
    precision: Literal["fp32", "bf16"] = "bf16"
    checkpoint: str | None = None
    optim: Optim = field(default_factory=Optim)
    phases: list[Phase] = field(default_factory=lambda: [Phase()])

    def validate(self) -> None:
        if self.optim.warmup_steps > sum(p.steps for p in self.phases):
            raise ConfigError("optim.warmup_steps: longer than all phases together")


def test_defaults_round_trip() -> None:
    cfg = from_dict(Demo, {})
    assert cfg == Demo()
    assert from_dict(Demo, to_dict(cfg)) == cfg


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(Demo, overrides=["optim.lr=3e-4", "precision=fp32", "phases=[{name: a, steps: 50}]",
                                       "checkpoint=runs/x"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.precision == "fp32"
    assert cfg.phases == [Phase("a", 50)]
    assert cfg.checkpoint == "runs/x"


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("no.such_key=1", "no.such_key"),
        ("optim.nope=1", "optim.nope"),
        ("optim.lr=fast", "optim.lr"),
        ("optim.warmup_steps=1.5", "optim.warmup_steps"),
        ("optim.lr=2.0", "optim.lr"),
        ("optim.warmup_steps=-1", "optim.warmup_steps"),
        ("precision=fp16", "precision"),
        ("phases=[{steps: 0}]", "phases[0].steps"),
        ("model.width=3", "model.width"),
        ("optim.warmup_steps=1000", "optim.warmup_steps"),
    ],
)
def test_bad_values_name_the_key(override: str, names: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(Demo, overrides=[override])
    assert str(e.value).startswith(names), str(e.value)


def test_out_of_range_message_says_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"allowed \[0.0, 1.0\]"):
        load_config(Demo, overrides=["optim.lr=5"])
    with pytest.raises(ConfigError, match="'fp32', 'bf16'"):
        load_config(Demo, overrides=["precision=fp64"])


def test_file_errors_name_the_file_and_line(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  unknown_thing: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.unknown_thing"):
        load_config(Demo, config_file=bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"broken.yaml line \d+"):
        load_config(Demo, config_file=broken)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Demo, config_file=tmp_path / "missing.yaml")


def test_precedence_file_then_overrides(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("optim: {lr: 0.5, warmup_steps: 3}\n")
    cfg = load_config(Demo, config_file=f, overrides=["optim.lr=0.25"])
    assert cfg.optim.lr == 0.25 and cfg.optim.warmup_steps == 3


def test_unknown_profile_refused() -> None:
    with pytest.raises(ConfigError, match="profile"):
        load_config(Demo, profile="huge")


def test_parse_override_reads_yaml_scalars() -> None:
    assert parse_override("a.b=1e-3") == (["a", "b"], 1e-3)
    assert parse_override("flag=true") == (["flag"], True)
    assert parse_override("name=coswin") == (["name"], "coswin")
    with pytest.raises(ConfigError):
        parse_override("no_equals_sign")
