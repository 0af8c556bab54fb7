"""What makes a UniCL run learn: CLIP's text-tower init, the in-place temperature clamp, the collapse detector."""

from __future__ import annotations

import math

import pytest
import torch

from florence_lib.config import from_dict
from florence_lib.data.tokenizer import Tokenizer
from florence_lib.data.world import World, WorldConfig
from florence_lib.evaluation.config import EvalConfig
from florence_lib.evaluation.evaluator import Evaluator, notebook_evaluator
from florence_lib.models import create_model
from florence_lib.models.text_encoder import TextTransformer
from florence_lib.runs import RunDir
from florence_lib.training.checkpoint import (
    checkpoint_image_size,
    list_checkpoints,
    load_weights,
    read_model_spec,
)
from florence_lib.training.config import PretrainConfig
from florence_lib.training.engine import Engine
from florence_lib.training.pretrain import build_model, pretrain
from florence_lib.training.schedules import build_scheduler
from florence_lib.training.validation import PretrainValidator, mean_pairwise_cosine


@pytest.mark.parametrize("width, layers", [(64, 2), (256, 6)])
def test_text_transformer_init_follows_clip(width, layers):
    torch.manual_seed(0)
    tower = TextTransformer(vocab_size=3000, context_length=77, width=width, layers=layers, heads=4)
    attn, proj, fc = width**-0.5, width**-0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
    expected = {"attn.qkv": attn, "attn.proj": proj, "mlp.fc1": fc, "mlp.fc2": proj}
    for block in tower.blocks:
        for name, std in expected.items():
            linear = block.get_submodule(name)
            assert linear.weight.std().item() == pytest.approx(std, rel=0.08), name
            assert linear.bias.abs().max().item() == 0.0
    assert tower.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert tower.positional_embedding.std().item() == pytest.approx(0.01, rel=0.05)


def _temperature_run(pushes: list[float]) -> list[float]:
    """logit_scale after each step of an objective that pulls the temperature up (+1) or down (-1)."""
    model = create_model("unicl_tiny", init_logit_scale=math.log(90))
    optimizer = torch.optim.AdamW([model.logit_scale], lr=0.05, weight_decay=0.0)
    direction = {"sign": 1.0}

    def objective(m, batch):
        return -direction["sign"] * m.temperature_scale(), {}

    engine = Engine(model, objective, optimizer, build_scheduler(optimizer, warmup_steps=0, total_steps=100),
                    device=torch.device("cpu"), grad_clip=None)
    trace = []
    for sign in pushes:
        direction["sign"] = sign
        engine.train_step({})
        trace.append(model.logit_scale.item())
    return trace


def test_temperature_overshoots_the_bound_is_clamped_and_comes_back_down():
    bound = math.log(100)
    trace = _temperature_run([1.0] * 10 + [-1.0] * 30)
    up, down = trace[:10], trace[10:]
    # AdamW steps of ~0.05 from ln 90 = 4.50 cross ln 100 = 4.61 within 3 steps: the clamp holds it at the bound.
    assert all(v <= bound + 1e-6 for v in trace)
    assert up[-1] == pytest.approx(bound, abs=1e-6) and up[2] == pytest.approx(bound, abs=1e-6)
    # ...and once the loss wants a warmer temperature, it moves off the bound (a forward-pass clamp would pass
    # no gradient from there, and the parameter, free to grow past the bound, could never come back).
    assert down[-1] < bound - 0.3 and down[-1] < down[-10] < bound


def test_collapse_detector_reads_one_for_collapsed_and_zero_for_orthogonal_embeddings():
    assert mean_pairwise_cosine(torch.ones(5, 8) + 1e-4 * torch.randn(5, 8)) == pytest.approx(1.0, abs=1e-4)
    assert mean_pairwise_cosine(torch.eye(6)) == pytest.approx(0.0, abs=1e-7)
    pair = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # 45 degrees
    assert mean_pairwise_cosine(pair) == pytest.approx(math.cos(math.pi / 4))


def test_checkpoint_resolution_detector_and_window_change(tmp_path):
    cfg = from_dict(PretrainConfig, {
        "data": {"train_size": 64, "val_size": 16, "batch_size": 8, "image_size": 32},
        "optim": {"warmup_steps": 1}, "log_every": 1, "eval_every": 2, "checkpoint_every": 2, "device": "cpu",
        "phases": [{"name": "stage1", "steps": 2, "image_label_fraction": 0.5},
                   {"name": "hires", "steps": 2, "image_size": 48, "window_size": 6}]})
    results = pretrain(cfg, tmp_path)
    checkpoints = list_checkpoints(tmp_path / "checkpoints")
    assert [checkpoint_image_size(c) for c in checkpoints] == [32, 48]  # step 2 ended stage1, step 4 hires
    assert read_model_spec(checkpoints[-1])["kwargs"]["image"]["window_size"] == 6
    val = [r for r in RunDir(tmp_path).metrics() if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4]
    for r in val + [results]:
        assert -1.0 <= r["class_prompt_cosine"] <= 1.0 and 0.0 <= r["zero_shot_top1_all"] <= 1.0
    # a window change alone (the phase-change rebuild, tables interpolated 4 -> 6) keeps what was learned: at the
    # same resolution the trained checkpoint scores the same (it is the resolution change that costs, issue 10)
    trained = load_weights(checkpoints[0])
    before = build_model({"name": "unicl_tiny", "kwargs": {}}, trained)
    after = build_model({"name": "unicl_tiny", "kwargs": {"image": {"window_size": 6}}}, trained)
    validator = PretrainValidator(World(WorldConfig(image_size=32)), Tokenizer(), torch.device("cpu"), 16)
    scores_before, scores_after = validator(before), validator(after)
    for key, value in scores_before.items():
        assert scores_after[key] == pytest.approx(value, abs=1 / 16 + 1e-6), key
    images = torch.stack([validator.all_classes[i][0] for i in range(16)])
    with torch.no_grad():
        cosine = (before.encode_image(images) * after.encode_image(images)).sum(-1)
    assert cosine.min().item() > 0.999
    # evaluation defaults to the resolution the checkpoint finished at
    ev, _ = notebook_evaluator("03_zero_shot", profile="smoke", run_dir=tmp_path / "series", data_root=None,
                               checkpoint=checkpoints[-1], seed=0)
    assert ev.cfg.image_size == 48
    cli = Evaluator.from_config(from_dict(EvalConfig, {"checkpoint": str(checkpoints[0])}))  # `evaluate` too
    assert cli.cfg.image_size == 32
    assert Evaluator.from_config(from_dict(EvalConfig, {"checkpoint": str(checkpoints[0]), "image_size": 40})
                                 ).cfg.image_size == 40  # an explicit size wins


def test_ablation_arms_in_parallel_processes_match_the_sequential_runs(tmp_path):
    from florence_lib.runs import RunDir
    from florence_lib.training.ablations import run_arms

    common = ["phases=[{name: ablation, steps: 2}]", "data.image_size=32", "data.train_size=16",
              "data.val_size=8", "data.batch_size=4", "optim.warmup_steps=1", "threads=1"]
    one = run_arms({"clip": ["loss=clip"]}, [0], profile="smoke", run_dir=RunDir(tmp_path / "one"), common=common)
    two = run_arms({"clip": ["loss=clip"]}, [0, 1], profile="smoke", run_dir=RunDir(tmp_path / "two"),
                   common=common, workers=2)
    assert len(two["clip"]) == 2 and (tmp_path / "two" / "clip" / "seed1" / "results.json").is_file()
    assert two["clip"][0]["final_loss"] != two["clip"][1]["final_loss"]  # in seed order
    for metric in ("final_loss", "zero_shot_top1", "i2t_r1"):  # seeded: the same numbers whatever the workers
        assert one["clip"][0][metric] == pytest.approx(two["clip"][0][metric])
