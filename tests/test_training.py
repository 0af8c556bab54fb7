"""Training: schedule values, weight-decay groups, checkpoints, exact resume, a smoke pretraining run, the CLI,
and the high-resolution phase's interpolated position tables."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from florence_lib.config import from_dict, load_config
from florence_lib.data.tokenizer import Tokenizer
from florence_lib.data.transforms import CLIP_MEAN, CLIP_STD
from florence_lib.models import create_model, interpolate_rel_pos_bias
from florence_lib.runs import PROJECT_ROOT, RunDir
from florence_lib.training import Engine, PretrainConfig, pretrain
from florence_lib.training.batches import trim_padding
from florence_lib.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
)
from florence_lib.training.optim import build_optimizer, param_groups
from florence_lib.training.pretrain import build_engine, build_model
from florence_lib.training.schedules import build_scheduler, warmup_cosine


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are small: one thread is as fast on 2 free cores and far faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unicl_tiny")


def tiny_config(**changes) -> PretrainConfig:
    """A run of a few seconds: 2 + 2 steps at 64 px, then 2 steps at 96 px with a bigger window."""
    base = {
        "data": {"train_size": 128, "val_size": 16, "batch_size": 8, "grayscale": 0.3, "invert": 0.2},
        "optim": {"warmup_steps": 1, "lr": 5e-4},
        "phases": [{"name": "stage1", "steps": 2, "image_label_fraction": 0.5}, {"name": "stage2", "steps": 2},
                   {"name": "hires", "steps": 2, "image_size": 96, "window_size": 6}],
        "model_overrides": {"image": {"drop_path_rate": 0.1}},  # resume must reproduce stochastic depth and
        # the photometric augmentations too
        "log_every": 1, "eval_every": 0, "checkpoint_every": 2, "device": "cpu",
    }
    return from_dict(PretrainConfig, {**base, **changes})


def train_losses(run_dir) -> list[float]:
    return [r["loss"] for r in RunDir(run_dir).metrics() if r["split"] == "train"]


# ------------------------------------------------------------------------------------------------- schedule
def test_warmup_cosine_values():
    kw = {"warmup_steps": 4, "total_steps": 14, "min_lr_ratio": 0.1}
    assert [warmup_cosine(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(9, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(14, **kw) == pytest.approx(0.1)
    assert warmup_cosine(100, **kw) == pytest.approx(0.1)  # flat after the end


def test_scheduler_continues_mid_schedule_on_a_fresh_optimizer():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = build_scheduler(opt, warmup_steps=2, total_steps=10)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([1.0, 2.0, 2.0])
    fresh = torch.optim.SGD([p], lr=2.0)
    build_scheduler(fresh, warmup_steps=2, total_steps=10, last_step=5)
    assert fresh.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])  # lr of step 6


# ------------------------------------------------------------------------------------------------- optimizer
def test_no_weight_decay_on_norms_biases_temperature_embeddings(tiny):
    groups = param_groups(tiny, 0.2)
    names = {id(p): n for n, p in tiny.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    free = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed | free == set(names.values()) and not decayed & free
    assert "logit_scale" in free
    assert any(n.endswith("token_embedding.weight") for n in free)
    assert any(n.endswith("positional_embedding") for n in free)
    assert any(n.endswith("relative_position_bias_table") for n in free)
    assert all(tiny.get_parameter(n).ndim >= 2 for n in decayed)
    assert "image_projection.weight" in decayed and "text_projection.weight" in decayed
    assert all(tiny.get_parameter(n).ndim <= 1 for n in free if "norm" in n or n.endswith(".bias"))
    opt = build_optimizer(tiny, lr=1e-3, weight_decay=0.2)
    assert opt.defaults["fused"] is True  # the single-kernel update is available on CPU



def test_image_lr_gives_the_image_tower_its_own_rate_through_the_schedule():
    cfg = tiny_config(optim={"warmup_steps": 2, "lr": 1e-4, "image_lr": 1e-3})
    torch.manual_seed(0)
    model = create_model("unicl_tiny")
    engine = build_engine(cfg, model, torch.device("cpu"))
    assert engine.optimizer.param_groups[0]["initial_lr"] == pytest.approx(1e-4)  # the logged lr is the base lr
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in engine.optimizer.param_groups:
        owners = {names[id(p)].split(".")[0] for p in group["params"]}
        image = owners <= {"image_encoder", "image_projection"}
        assert image or not owners & {"image_encoder", "image_projection"}  # no group mixes the towers
        assert group["initial_lr"] == pytest.approx(1e-3 if image else 1e-4)
        assert group["lr"] == pytest.approx(group["initial_lr"] / 2)  # warmup step 1 of 2 scales both alike
        seen |= {names[id(p)] for p in group["params"]}
    assert {g["weight_decay"] for g in engine.optimizer.param_groups} == {0.0, cfg.optim.weight_decay}
    assert seen == set(names.values())

# ------------------------------------------------------------------------------------------------- batches
@pytest.mark.parametrize("preset", ["unicl_tiny", "unicl_minilm_tiny"])
def test_trimmed_padding_gives_the_same_text_features(preset):
    """Both poolings ignore padding (causal end token; masked mean), so cutting all-pad columns is exact."""
    torch.manual_seed(0)
    model = create_model(preset, text={"pretrained": False} if "minilm" in preset else {}).eval()
    texts = ["a red circle", "a big blue square at the top left, next to a small green star on a gradient", "a"]
    tokens = Tokenizer()(texts)
    trimmed = trim_padding(tokens)
    lengths = tokens["attention_mask"].sum(1)
    assert trimmed["input_ids"].shape == (3, int(lengths.max())) < tokens["input_ids"].shape
    assert torch.equal(trimmed["attention_mask"].sum(1), lengths)  # only pad columns were cut
    with torch.no_grad():
        full = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        short = model.encode_text(trimmed["input_ids"], trimmed["attention_mask"])
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tiny, tmp_path):
    spec = {"name": "unicl_tiny", "kwargs": {}}
    state = {"step": 3, "note": torch.arange(4)}
    for step in (1, 3, 2):
        save_checkpoint(tmp_path / "checkpoints", tiny, step=step, model_spec=spec, config={"seed": 7},
                        state=state, keep=2)
    (tmp_path / "checkpoints" / "step-00000009.tmp").mkdir()  # a save that was killed: never picked up
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000002", "step-00000003"]
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step-00000003"
    images, ids = torch.randn(2, 3, 64, 64), torch.randint(1000, 2000, (2, 12))
    mask = torch.ones_like(ids)
    tiny.eval()
    with torch.no_grad():
        expected = tiny(images, ids, mask)
    for where in (tmp_path, tmp_path / "checkpoints", latest, latest / "model.safetensors"):
        model, config = load_checkpoint(where)
        assert config == {"seed": 7}
        for a, b in zip(model.state_dict().values(), tiny.state_dict().values()):
            assert torch.equal(a, b)
        with torch.no_grad():
            for a, b in zip(model(images, ids, mask), expected):
                assert torch.equal(a, b)
    assert torch.equal(load_training_state(tmp_path)["note"], torch.arange(4))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty")


# ------------------------------------------------------------------------------------------------- phases
def test_new_window_loads_interpolated_tables(tiny):
    assert tiny.config.image.window_size == 4
    state = tiny.state_dict()
    model = build_model({"name": "unicl_tiny", "kwargs": {"image": {"window_size": 6}}}, state)
    expected = interpolate_rel_pos_bias(state, 6)
    tables = [k for k in state if k.endswith("relative_position_bias_table")]
    assert tables
    for key, value in model.state_dict().items():
        if key in tables:
            assert state[key].shape[0] == 7 * 7 and value.shape[0] == 11 * 11
        assert torch.equal(value, expected[key])
    with torch.no_grad():
        out = model.encode_image(torch.randn(2, 3, 96, 96))
    assert out.shape == (2, tiny.config.embed_dim) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_losses(tmp_path, monkeypatch):
    cfg = tiny_config()
    pretrain(cfg, tmp_path / "straight")
    straight = train_losses(tmp_path / "straight")
    assert len(straight) == cfg.total_steps == 6

    step = Engine.train_step

    def killed_after_step_3(self, batch):  # dies one step after the checkpoint at step 2 ...
        if self.step == 3:
            raise KeyboardInterrupt
        return step(self, batch)

    monkeypatch.setattr(Engine, "train_step", killed_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, tmp_path / "resumed")
    assert latest_checkpoint(tmp_path / "resumed").name == "step-00000002"
    monkeypatch.setattr(Engine, "train_step", step)
    results = pretrain(cfg, tmp_path / "resumed")  # ... and resumes across the 64 -> 96 px phase change
    assert train_losses(tmp_path / "resumed") == straight
    assert results["steps"] == 6
    model, _ = load_checkpoint(tmp_path / "resumed")
    assert model.config.image.window_size == 6


@pytest.mark.slow
def test_smoke_pretraining_learns(tmp_path):
    cfg = from_dict(PretrainConfig, {
        "data": {"train_size": 2048, "val_size": 32, "batch_size": 32, "caption": "long"},
        "optim": {"warmup_steps": 5, "lr": 2e-3, "weight_decay": 0.0},
        "phases": [{"name": "stage2", "steps": 40}],
        "log_every": 1, "eval_every": 0, "checkpoint_every": 0, "device": "cpu",
    })
    results = pretrain(cfg, tmp_path)
    losses = train_losses(tmp_path)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    chance = 1 / cfg.data.val_size  # one caption per image
    assert (results["i2t_r1"] + results["t2i_r1"]) / 2 > 1.5 * chance
    assert json.loads((tmp_path / "results.json").read_text())["steps"] == 40


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_names_an_unknown_key():
    proc = subprocess.run([sys.executable, "-m", "florence_lib", "pretrain", "--set", "no.such_key=1"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert proc.returncode == 2
    assert "no.such_key" in proc.stderr


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_profiles_validate(profile):
    cfg = load_config(PretrainConfig, command="pretrain", profile=profile)
    assert cfg.total_steps > cfg.optim.warmup_steps
    if profile == "paper":
        assert cfg.model == "unicl_huge" and cfg.data.batch_size == 24_576
        assert [p.image_size for p in cfg.phases][-1] == 384


def test_a_phase_sets_its_own_augmentation_probabilities():
    from florence_lib.training.pretrain import phase_transform, plan_phases

    cfg = tiny_config(phases=[{"name": "stage1", "steps": 2}, {"name": "stage2", "steps": 2, "grayscale": 1.0,
                                                                "invert": 0.0}])
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    first, second = (phase_transform(cfg, p) for p in plan_phases(cfg))
    assert [type(t).__name__ for t in first.transforms].count("RandomInvert") == 1  # data.invert 0.2 inherited
    grey = second(image)
    assert torch.allclose(grey[0] * CLIP_STD[0] + CLIP_MEAN[0], grey[2] * CLIP_STD[2] + CLIP_MEAN[2], atol=1e-5)
    assert "RandomInvert" not in [type(t).__name__ for t in second.transforms]  # the phase's 0.0 wins


@pytest.mark.slow
def test_a_checkpoint_saved_before_a_key_existed_resumes_when_the_key_is_at_its_default(tmp_path):
    plain = tiny_config(data={"train_size": 128, "val_size": 16, "batch_size": 8},
                        phases=[{"name": "stage1", "steps": 2}, {"name": "stage2", "steps": 1}])
    pretrain(plain, tmp_path)
    shutil.rmtree(tmp_path / "checkpoints" / "step-00000003")
    saved = tmp_path / "checkpoints" / "step-00000002" / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["data"]["grayscale"], old["phases"][0]["invert"]
    saved.write_text(yaml.safe_dump(old))
    assert pretrain(plain, tmp_path)["steps"] == 3
