"""DeepSpeed backend: config generation and refusals (no launch), then one 2-rank gloo run that checks ZeRO 1/2/3
and the gradient cache against the single-process engine, bf16, consolidation and an exact resume."""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_unicl import BATCH, CONTEXT, tiny_batch, tiny_model

from florence_lib import distributed as D
from florence_lib.config import ConfigError, from_dict
from florence_lib.models import create_model
from florence_lib.training.checkpoint import WEIGHTS, read_model_spec
from florence_lib.training.config import PretrainConfig
from florence_lib.training.ds_config import pretrain_ds_config
from florence_lib.training.memory import model_state_bytes, model_zero_table
from florence_lib.training.pretrain import build_engine

STEPS = 3
ROOT = Path(__file__).resolve().parent.parent


def config(**distributed) -> PretrainConfig:
    return from_dict(PretrainConfig, {
        "data": {"batch_size": BATCH}, "optim": {"warmup_steps": 1, "fused": False},
        "phases": [{"name": "a", "steps": 10}], "distributed": distributed})


# ----------------------------------------------------------------------------------------------- no launch
def test_paper_batch_arithmetic_and_explicit_clipping() -> None:
    cfg = from_dict(PretrainConfig, {"data": {"batch_size": 24_576}, "precision": "bf16", "optim": {"grad_clip": None},
                                     "distributed": {"engine": "deepspeed", "zero_stage": 3, "grad_cache_chunk": 16,
                                                     "hpz_partition_size": 8}})
    plan, ds = pretrain_ds_config(cfg, 512, cuda=True, gpus_per_node=8)
    assert (plan.micro_batch, plan.chunks, plan.contrastive_batch) == (16, 3, 24_576)
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 512
    assert ds["gradient_clipping"] == 0.0  # null -> off, said explicitly (DeepSpeed's default would be 1.0)
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"] and ds["zero_optimization"]["stage"] == 3
    assert pretrain_ds_config(config(engine="deepspeed"), 2, cuda=False)[1]["gradient_clipping"] == 1.0


@pytest.mark.parametrize("overrides, world, cuda, message", [
    ({"precision": "fp16"}, 2, False, "fp16 needs CUDA"),
    ({"data": {"batch_size": 10}}, 4, False, "not divisible by world size 4"),
    ({"distributed": {"grad_cache_chunk": 3}}, 2, False, "grad_cache_chunk: 3 does not divide the 4 images"),
    ({"distributed": {"zero_stage": 3, "hpz_partition_size": 4}}, 6, True, "hpz_partition_size: 4 must divide"),
    ({"distributed": {"ds_overrides": {"fp16": {"enabled": True}}}, "precision": "bf16"}, 2, False,
     "fp16.enabled=True contradicts precision"),
    ({"distributed": {"ds_overrides": {"gradient_accumulation_steps": 4}}}, 2, False, "contradicts distributed"),
])
def test_impossible_launches_are_refused_before_start(overrides: dict, world: int, cuda: bool, message: str) -> None:
    data = {"data": {"batch_size": BATCH}, "phases": [{"name": "a", "steps": 10}], "optim": {"warmup_steps": 1}}
    data = {**data, **{k: v for k, v in overrides.items() if k != "distributed"}}
    data["distributed"] = {"engine": "deepspeed", **overrides.get("distributed", {})}
    with pytest.raises(ConfigError, match=message):
        pretrain_ds_config(from_dict(PretrainConfig, data), world, cuda=cuda, gpus_per_node=6 if cuda else None)


@pytest.mark.parametrize("distributed, message", [
    ({"zero_stage": 2}, "zero_stage: 2 needs engine: deepspeed"),
    ({"engine": "deepspeed", "hpz_partition_size": 8}, "hpz_partition_size: 8 partitions ZeRO-3"),
    ({"accumulation_steps": 2}, "accumulation_steps: 2 needs engine: deepspeed"),
])
def test_impossible_configs_are_refused_when_loaded(distributed: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**distributed)
    with pytest.raises(ConfigError, match="fp16 needs dynamic loss scaling"):
        from_dict(PretrainConfig, {"precision": "fp16"})


# ----------------------------------------------------------------------------------------------- 2 ranks
def rank_batch(step: int) -> dict[str, torch.Tensor]:
    batch = tiny_batch(seed=step)
    n = BATCH // D.world_size()
    return {k: v[D.rank() * n:(D.rank() + 1) * n] for k, v in batch.items()}


def losses(engine, steps: range) -> list[float]:
    return [engine.train_step(rank_batch(s))["loss"] for s in steps]


def temperature_trace(stage: int) -> list[float]:
    """exp(logit_scale) under an objective that pulls the temperature up for 6 steps, then down for 24."""
    cfg = from_dict(PretrainConfig, {
        "data": {"batch_size": BATCH}, "optim": {"lr": 0.05, "warmup_steps": 0, "fused": False},
        "phases": [{"name": "a", "steps": 100}], "distributed": {"engine": "deepspeed", "zero_stage": stage}})
    torch.manual_seed(0)
    model = create_model("unicl_tiny", init_logit_scale=math.log(90),
                         text={"context_length": CONTEXT, "vocab_size": 512})
    engine = build_engine(cfg, model, torch.device("cpu"))
    sign = [1.0]

    def objective(m, batch):
        image, text, scale = m(batch["image"], batch["input_ids"], batch["attention_mask"])
        return -sign[0] * scale + 0.0 * (image.sum() + text.sum()), {}

    engine.objective, trace = objective, []
    for s in [1.0] * 6 + [-1.0] * 24:
        sign[0] = s
        trace.append(engine.train_step(rank_batch(0))["logit_scale"])
    return trace


def run_checks(checkpoints: str) -> dict[str, list[float]]:
    out = {f"temperature_zero{stage}": temperature_trace(stage) for stage in (2, 3)}
    for stage in (1, 2, 3):
        out[f"zero{stage}"] = losses(build_engine(config(engine="deepspeed", zero_stage=stage), tiny_model(),
                                                  torch.device("cpu")), range(STEPS))
    cfg = config(engine="deepspeed", zero_stage=3, grad_cache_chunk=2)
    out["zero3_cache"] = losses(build_engine(cfg, tiny_model(), torch.device("cpu")), range(STEPS))
    cfg = config(engine="deepspeed", zero_stage=2)
    cfg.precision = "bf16"
    out["zero2_bf16"] = losses(build_engine(cfg, tiny_model(), torch.device("cpu")), range(STEPS))
    # Save after step 2 of 4, drop the engine (the "kill"), resume a fresh one from the checkpoint.
    cfg = config(engine="deepspeed", zero_stage=3)
    engine = build_engine(cfg, tiny_model(), torch.device("cpu"))
    losses(engine, range(2))
    engine.save(checkpoints, model_spec={"name": "unicl_tiny", "kwargs": {}}, config=cfg)
    out["uninterrupted"] = losses(engine, range(2, 4))
    resumed = build_engine(cfg, tiny_model(), torch.device("cpu"))
    resumed.resume(Path(checkpoints) / "step-00000002")
    out["resumed_step"] = [resumed.step]
    out["resumed"] = losses(resumed, range(2, 4))
    return out


@functools.cache
def reference(chunk: int | None = None) -> list[float]:
    """The single-process torch engine's losses on the full batches (computed once per chunking)."""
    engine = build_engine(config(grad_cache_chunk=chunk), tiny_model(), torch.device("cpu"))
    return [engine.train_step(tiny_batch(seed=s))["loss"] for s in range(STEPS)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    checkpoints = tmp_path_factory.mktemp("ds") / "checkpoints"
    return D.run_local(run_checks, str(checkpoints), world_size=2)[0], checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_stages_match_the_single_process_engine(stage: int, two_ranks: tuple) -> None:
    assert two_ranks[0][f"zero{stage}"] == pytest.approx(reference(), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_temperature_is_clamped_in_place_and_comes_back_down(stage: int, two_ranks: tuple) -> None:
    trace = two_ranks[0][f"temperature_zero{stage}"]  # exp(logit_scale) after each step
    assert max(trace) <= 100.0 + 1e-3 and trace[5] == pytest.approx(100.0, rel=1e-5)  # overshoot clamped
    assert trace[-1] < 100.0 * math.exp(-0.3)  # the fp32 master copy was clamped too: it leaves the bound


@pytest.mark.slow
def test_gradient_cache_under_zero3_matches_the_single_process_cache(two_ranks: tuple) -> None:
    # 2 ranks x 2 chunks of 2 through engine.backward/engine.step vs one process, 4 chunks of 2, plain backward.
    assert two_ranks[0]["zero3_cache"] == pytest.approx(reference(chunk=2), rel=1e-4)


@pytest.mark.slow
def test_bf16_follows_the_fp32_curve(two_ranks: tuple) -> None:
    assert two_ranks[0]["zero2_bf16"] == pytest.approx(reference(), rel=3e-2)


@pytest.mark.slow
def test_killed_and_resumed_run_continues_the_loss_curve_exactly(two_ranks: tuple) -> None:
    out, checkpoints = two_ranks
    assert out["resumed_step"] == [2]
    assert out["resumed"] == out["uninterrupted"]
    ckpt = checkpoints / "step-00000002"
    weights = load_file(str(ckpt / WEIGHTS))  # consolidated from the ZeRO-3 shards: the whole model, fp32
    model = tiny_model()
    assert weights.keys() == model.state_dict().keys()
    assert all(weights[k].shape == v.shape and weights[k].dtype == torch.float32 for k, v in model.state_dict().items())
    assert read_model_spec(ckpt)["name"] == "unicl_tiny"


# ----------------------------------------------------------------------------------------------- memory
def test_zero_memory_matches_the_paper_figure() -> None:
    """ZeRO paper Fig. 1: 7.5B parameters, 64 GPUs, K=12 -> 120, 31.4, 16.6 and 1.9 GB per GPU."""
    gb = [model_state_bytes(7_500_000_000, s, 64)["total"] / 1e9 for s in range(4)]
    assert gb == pytest.approx([120.0, 31.4, 16.6, 1.875], abs=0.06)
    assert model_state_bytes(1000, 3, 8, hpz_partition_size=8)["params"] == pytest.approx(2 * 1000 / 8 * 2)


def test_paper_model_fits_per_gpu_only_with_zero() -> None:
    rows = {r["zero_stage"]: r for r in model_zero_table("unicl_huge", [512])}
    assert 0.85e9 < rows[0]["num_params"] < 0.95e9  # the paper's 893M
    assert rows[0]["total"] > 13 and rows[3]["total"] < 0.05  # GiB: 16 bytes x 893M vs a 512th of it
    assert [rows[s]["total"] for s in range(4)] == sorted((rows[s]["total"] for s in range(4)), reverse=True)


# ----------------------------------------------------------------------------------------------- cluster
def cluster_main() -> object:
    spec = importlib.util.spec_from_file_location("cluster_launch", ROOT / "cluster" / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cluster_dry_run_prints_commands_and_resolved_configs(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    main = cluster_main()
    assert main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "batch 24576 = 512 ranks x 16 images x 3 gradient-cache chunks" in out
    assert "#SBATCH --nodes=64" in out and "#SBATCH --requeue" in out and "scontrol requeue" in out
    assert "srun --wait-all-nodes=1 --kill-on-bad-exit=1 python -m florence_lib pretrain --profile paper" in out
    assert "model: unicl_huge" in out and '"stage": 3' in out and '"train_batch_size": 24576' in out
    assert main(["--launcher", "deepspeed", "--nodes", "2", "--set", "data.batch_size=768"]) == 0
    out = capsys.readouterr().out
    assert "deepspeed --hostfile $HOSTFILE --num_nodes 2 --num_gpus 8" in out and "slots=8" in out
    assert main(["--nodes", "5"]) == 2  # refused before anything is written or submitted
    assert "data.batch_size: 24576 is not divisible by world size 40" in capsys.readouterr().err
    assert main(["--gpus-per-node", "4"]) == 2
    assert "hpz_partition_size: 8 must divide" in capsys.readouterr().err
    assert main(["--sbatch", str(tmp_path / "job.sbatch"), "--workdir", str(tmp_path)]) == 0  # log folder in tmp
    assert (tmp_path / "job.sbatch").read_text().startswith("#!/bin/bash")
