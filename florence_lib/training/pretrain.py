"""UniCL pretraining on the embedded world (paper §2.2-2.3): phases, validation, checkpoints, exact resume.

``pretrain(cfg, run_dir)`` runs the phases of ``cfg`` in order. A phase fixes the image size, the share of
prompt-augmented image-label data and the attention window; entering a phase with a new window rebuilds the model
with the relative-position-bias tables interpolated (``interpolate_rel_pos_bias``) and restarts AdamW's moments,
while the lr schedule continues. With ``cfg.resume`` a run continues from the run directory's latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import deep_merge, from_dict, to_dict
from ..data.mixing import DataTracker, MixCollate, MixedPairs, Part, open_sources
from ..data.sources import IMAGE_LABEL_KINDS, SourceConfig, check_sources, describe_sources
from ..data.stream import MixedStream
from ..data.tokenizer import Tokenizer
from ..data.transforms import train_transform
from ..data.world import World, WorldConfig, WorldPairs
from ..distributed import barrier, intra_op_threads, is_main_process, rank, world_size
from ..models import create_model, interpolate_rel_pos_bias
from ..runs import RunDir, seed_everything
from .batches import PairCollate, step_loader
from .checkpoint import (
    checkpoint_name,
    checkpoint_step,
    latest_checkpoint,
    load_config_dict,
    load_weights,
    read_model_spec,
)
from .config import DataConfig, PhaseConfig, PretrainConfig
from .ds_config import pretrain_ds_config
from .engine import Engine, move_to, resolve_device
from .grad_cache import GradCacheEngine
from .objectives import ContrastiveObjective
from .optim import build_optimizer
from .precision import resolve_precision
from .schedules import build_scheduler
from .validation import PretrainValidator

RESUME_IGNORES = ("resume", "device", "threads", "compile", "log_every", "eval_every", "checkpoint_every",
                  "checkpoint_keep", "tensorboard")
"""Config keys a resumed run may change: they do not alter the training trajectory."""


@dataclasses.dataclass(frozen=True)
class Phase:
    """A phase placed on the global step axis, with its resolved image and window sizes."""

    index: int
    cfg: PhaseConfig
    start: int
    end: int
    image_size: int
    window_size: int | None


def plan_phases(cfg: PretrainConfig) -> list[Phase]:
    """Phases with their global step ranges; a null size inherits the previous phase's (or the default)."""
    phases, start = [], 0
    image_size, window = cfg.data.image_size, None
    for i, p in enumerate(cfg.phases):
        image_size = p.image_size or image_size
        window = p.window_size or window
        phases.append(Phase(i, p, start, start + p.steps, image_size, window))
        start += p.steps
    return phases


def model_spec(cfg: PretrainConfig, phase: Phase) -> dict[str, Any]:
    """``{"name", "kwargs"}`` for ``create_model``: the preset, the config's overrides and the phase's window."""
    kwargs = dict(cfg.model_overrides)
    if phase.window_size is not None:
        kwargs = deep_merge(kwargs, {"image": {"window_size": phase.window_size}})
    return {"name": cfg.model, "kwargs": kwargs}


def build_model(spec: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The model of ``spec``; ``state_dict`` (if given) is loaded with its position tables fitted to the window."""
    model = create_model(spec["name"], **spec["kwargs"])
    if state_dict is not None:
        model.load_state_dict(interpolate_rel_pos_bias(state_dict, model.config.image.window_size))
    return model


def build_engine(cfg: PretrainConfig, model: nn.Module, device: torch.device, step: int = 0) -> Engine:
    """Optimizer, schedule and engine for ``model``, starting at global ``step`` (the seam a DeepSpeed run swaps)."""
    model.to(device)
    if cfg.precision == "auto":  # pretrain() probes first; called alone: bf16 on CUDA, fp32 on a CPU
        cfg = dataclasses.replace(cfg, precision=resolve_precision("auto", device)[0])
    o = cfg.optim
    image_lr = None if o.image_lr is None else {"image_encoder.": o.image_lr, "image_projection.": o.image_lr}
    optimizer = build_optimizer(model, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps,
                                fused=o.fused, lr_by_prefix=image_lr)
    scheduler = build_scheduler(optimizer, warmup_steps=o.warmup_steps, total_steps=cfg.total_steps,
                                min_lr_ratio=o.min_lr_ratio, last_step=step - 1)
    d, objective = cfg.distributed, ContrastiveObjective(cfg.loss)
    model.set_grad_checkpointing(d.activation_checkpointing)
    if cfg.compile:  # in place (nn.Module.compile): checkpoints keep their keys
        model.image_encoder.compile()
        model.text_encoder.compile()
    if d.engine == "deepspeed":
        from .deepspeed_engine import DeepSpeedEngine, import_deepspeed

        import_deepspeed()  # a no-op after pretrain() joined the group; keeps build_engine usable alone
        _, ds_config = pretrain_ds_config(cfg, world_size(), cuda=device.type == "cuda")
        engine = DeepSpeedEngine(model, objective, optimizer, scheduler, ds_config=ds_config, device=device,
                                 precision=cfg.precision, chunk_size=d.grad_cache_chunk,
                                 accumulation_steps=d.accumulation_steps)
    elif d.grad_cache_chunk is not None:
        engine = GradCacheEngine(model, objective, optimizer, scheduler, device=device, precision=cfg.precision,
                                 grad_clip=o.grad_clip, chunk_size=d.grad_cache_chunk)
    else:
        engine = Engine(model, objective, optimizer, scheduler, device=device, precision=cfg.precision,
                        grad_clip=o.grad_clip)
    engine.step = step
    return engine


def world_for(data: DataConfig, image_size: int, label_by: str = "shape_colour") -> World:
    return World(WorldConfig(seed=data.world_seed, image_size=image_size, caption_repeat=data.repetition,
                             label_by=label_by))


def phase_sources(cfg: PretrainConfig, phase: Phase) -> list[SourceConfig]:
    """The phase's sources: ``data.sources`` (default: the world); a source with ``phases`` only in those, and
    image-label sources (image folders, world_shapes) otherwise only where the phase has image-label data (the
    paper's stage 1), unless nothing else is left."""
    def used(s: SourceConfig) -> bool:
        if s.phases is not None:
            return phase.cfg.name in s.phases
        return s.kind not in IMAGE_LABEL_KINDS or phase.cfg.image_label_fraction > 0

    sources = cfg.data.sources or [SourceConfig()]
    return [s for s in sources if used(s)] or sources


def phase_transform(cfg: PretrainConfig, phase: Phase, colour_free: float = 0.0) -> Any:
    """The phase's training transform: its image size, and its photometric augmentation probabilities (the
    phase's own where set, else ``data``'s), plus ``colour_free`` ops (a world_shapes source's own strength)."""
    p = phase.cfg
    return train_transform(phase.image_size, grayscale=cfg.data.grayscale if p.grayscale is None else p.grayscale,
                           invert=cfg.data.invert if p.invert is None else p.invert, colour_free=colour_free)


def phase_parts(cfg: PretrainConfig, phase: Phase, transform: Any) -> list[Part]:
    """The phase's opened sources: the world's pairs with ``transform``; a world_shapes source's shape-labelled
    image-label pairs of the same training scenes with ``transform``'s settings plus its colour_free strength
    (that source's images only)."""
    p = phase.cfg

    def world() -> WorldPairs:
        return WorldPairs(world_for(cfg.data, phase.image_size), "train", cfg.data.train_size, transform=transform,
                          caption=cfg.data.caption, image_label_fraction=p.image_label_fraction,
                          hard_negatives=cfg.data.hard_negatives)

    def world_shapes(source: SourceConfig) -> WorldPairs:
        return WorldPairs(world_for(cfg.data, phase.image_size, label_by="shape"), "train",
                          source.size or cfg.data.train_size, transform=phase_transform(cfg, phase, source.colour_free),
                          image_label_fraction=1.0)

    return open_sources(phase_sources(cfg, phase), transform, world, cfg.data.strict, world_shapes)


def phase_loader(cfg: PretrainConfig, phase: Phase, tokenizer: Tokenizer, step: int,
                 positions: dict[int, int] | None = None) -> tuple[Iterable[dict[str, Any]], DataTracker]:
    """The phase's batches from global ``step`` on, and the tracker of their data counts and stream positions.

    Map-style sources only (world, pairs, image folders): the order depends only on (seed, phase, step), so a
    resumed run is exact. With shards the sources stream (``data.stream``): each reader skips the ``positions``
    saved with the checkpoint, or without them its share of the samples consumed before ``step``.
    """
    transform = phase_transform(cfg, phase)
    parts = phase_parts(cfg, phase, transform)
    collate, seed, tracker = MixCollate(PairCollate(tokenizer)), cfg.seed * 1000 + phase.index, DataTracker(parts)
    if not any(p.streamed for p in parts):
        loader = step_loader(MixedPairs(parts), collate, batch_size=cfg.data.batch_size, seed=seed,
                             start_step=step - phase.start, num_workers=cfg.data.num_workers, rank=rank(),
                             world_size=world_size())
        return tracker.wrap(loader), tracker
    per_rank = cfg.data.batch_size // world_size()
    skip = positions if positions else (step - phase.start) * per_rank // max(1, cfg.data.num_workers)
    stream = MixedStream(parts, transform, seed, cfg.data.shuffle_buffer, cfg.data.strict, skip)
    loader = torch.utils.data.DataLoader(stream, batch_size=per_rank, collate_fn=collate,
                                         num_workers=cfg.data.num_workers, persistent_workers=False)
    tracker.positions = dict(positions or {})
    return tracker.wrap(loader), tracker


def data_state_path(run_dir: RunDir, step: int) -> Path:
    """Where a checkpoint's stream positions are saved (per rank; the checkpoint folder belongs to rank 0)."""
    return run_dir.path / "data_state" / f"{checkpoint_name(step)}-rank{rank()}.json"


def save_data_state(run_dir: RunDir, step: int, phase: Phase, tracker: DataTracker) -> None:
    path = data_state_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"phase": phase.index, "positions": tracker.positions}), encoding="utf-8")


def load_data_state(run_dir: RunDir, step: int, phase: Phase) -> dict[int, int] | None:
    """The stream positions saved at ``step`` in ``phase``, or None (then readers skip by sample count)."""
    path = data_state_path(run_dir, step)
    if not path.is_file():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    return {int(k): int(v) for k, v in state["positions"].items()} if state["phase"] == phase.index else None


def _comparable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in cfg.items() if k not in RESUME_IGNORES}
    out["data"] = {k: v for k, v in out.get("data", {}).items() if k != "num_workers"}
    return out


def _prepare_run_dir(cfg: PretrainConfig, run_dir: RunDir) -> Path | None:
    """The checkpoint to resume from, or None after clearing a previous run's checkpoints and metrics."""
    ckpt = latest_checkpoint(run_dir.path / "checkpoints") if cfg.resume else None
    if ckpt is None:
        shutil.rmtree(run_dir.path / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir.path / "data_state", ignore_errors=True)  # stream positions of that run
        (run_dir.path / "metrics.jsonl").unlink(missing_ok=True)
        return None
    saved = to_dict(from_dict(PretrainConfig, load_config_dict(ckpt)))  # keys added since take their defaults
    if _comparable(saved) != _comparable(to_dict(cfg)):
        raise ValueError(f"{ckpt}: saved with a different training config; resume with that config, "
                         f"or set resume=false to start over in {run_dir.path}")
    step = checkpoint_step(ckpt)
    kept = [r for r in run_dir.metrics() if r.get("step", 0) <= step]  # drop what the killed run logged later
    (run_dir.path / "metrics.jsonl").unlink(missing_ok=True)
    for r in kept:
        run_dir.log(r)
    return ckpt


def _recorded_precision(run_dir: RunDir) -> dict[str, Any] | None:
    """The precision record in ``run_dir``'s ``meta.json`` (what a resumed run keeps), if any."""
    path = run_dir.path / "meta.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("precision")
    except (OSError, ValueError):
        return None


def run_precision(cfg: PretrainConfig, model: nn.Module, phase: Phase, tokenizer: Tokenizer,
                  device: torch.device, run_dir: RunDir, previous: Mapping[str, Any] | None = None
                  ) -> PretrainConfig:
    """``cfg`` with ``precision: auto`` resolved (a probe of the model's step on a CPU; see ``precision.py``), the
    choice recorded in ``meta.json``. Every rank takes rank 0's choice; a resumed run keeps ``previous``."""
    if previous is not None and previous.get("requested") == cfg.precision:
        info = {**previous, "kept_on_resume": True}
    elif cfg.precision == "auto":
        batches, _ = phase_loader(cfg, phase, tokenizer, 0)
        batch = move_to(next(iter(batches)), device)
        _, info = resolve_precision("auto", device, model, ContrastiveObjective(cfg.loss), batch)
    else:
        _, info = resolve_precision(cfg.precision, device)
    if world_size() > 1:
        shared = [info]
        torch.distributed.broadcast_object_list(shared, src=0)
        info = shared[0]
    if is_main_process():
        path = run_dir.path / "meta.json"
        meta = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        meta["precision"] = info
        path.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return dataclasses.replace(cfg, precision=info["resolved"])


def pretrain(cfg: PretrainConfig, run_dir: str | Path | RunDir) -> dict[str, Any]:
    """Pretrain a UniCL model as ``cfg`` says, logging to ``run_dir``; returns the final metrics.

    The returned (and ``results.json``) metrics: steps, final train loss and logit scale, zero-shot top-1 on the
    held-out classes, retrieval R@1 both ways, training images/s and the final checkpoint's path.
    """
    with intra_op_threads(cfg.threads):
        return _pretrain(cfg, run_dir)


def _pretrain(cfg: PretrainConfig, run_dir: str | Path | RunDir) -> dict[str, Any]:
    check_sources(cfg.data.sources)  # a missing path is refused before any work starts
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    phases = plan_phases(cfg)
    tokenizer = Tokenizer()
    if cfg.distributed.engine == "deepspeed":
        from .deepspeed_engine import import_deepspeed

        import_deepspeed()  # join the process group first: only rank 0 touches the run directory
    previous = _recorded_precision(run_dir) if cfg.resume else None
    if is_main_process():
        resume_from = _prepare_run_dir(cfg, run_dir)
        run_dir.start(cfg, seed=cfg.seed, command="pretrain", resumed_from=resume_from)
    barrier()
    resume_from = latest_checkpoint(run_dir.path / "checkpoints") if cfg.resume else None

    if resume_from is None:
        spec = model_spec(cfg, phases[0])
        model = build_model(spec)
    else:
        spec = {k: v for k, v in read_model_spec(resume_from).items() if k != "image_size"}
        model = build_model(spec, load_weights(resume_from))
    # cfg stays as written (checkpoints compare it on resume); the engines get the resolved precision
    run_cfg = run_precision(cfg, model.to(device), phases[0], tokenizer, device, run_dir,
                            previous if resume_from is not None else None)
    engine = build_engine(run_cfg, model, device)
    if resume_from is not None:
        engine.resume(resume_from)
    trained_at = {"image_size": phases[0].image_size}

    tracker: DataTracker | None = None
    logged: set[tuple[int, int]] = set()

    def log_data(phase: Phase) -> None:  # the data counts of the phase so far (once per step)
        if tracker is not None and is_main_process() and (phase.index, engine.step) not in logged:
            logged.add((phase.index, engine.step))
            run_dir.log({"phase": phase.cfg.name, "step": engine.step, "split": "data", **tracker.record()})

    def save(phase: Phase | None = None) -> Path:
        """A checkpoint that records the resolution it was trained at last (evaluation defaults to it), with
        the streamed sources' positions beside it."""
        path = engine.save(run_dir.checkpoints, model_spec={**spec, **trained_at}, config=cfg,
                           keep=cfg.checkpoint_keep)
        if phase is not None and tracker is not None:
            save_data_state(run_dir, engine.step, phase, tracker)
            log_data(phase)
        return path

    resumed_step = engine.step
    validator, seconds, images, skipped = None, 0.0, 0, {}
    for phase in phases:
        if engine.step >= phase.end:
            continue
        wanted = model_spec(cfg, phase)
        if wanted != spec:  # a new window: interpolate the tables, restart AdamW moments, keep the schedule
            model = build_model(wanted, engine.module_state_dict())
            engine, spec = build_engine(run_cfg, model, device, engine.step), wanted
        validator = PretrainValidator(world_for(cfg.data, phase.image_size), tokenizer, device, cfg.data.val_size)
        trained_at["image_size"] = phase.image_size
        start, t0 = engine.step, time.perf_counter()
        positions = load_data_state(run_dir, engine.step, phase) if engine.step == resumed_step else None
        batches, tracker = phase_loader(cfg, phase, tokenizer, engine.step, positions)
        engine.fit(batches, phase.end, run_dir=run_dir,
                   log_every=cfg.log_every, eval_every=cfg.eval_every, evaluate=lambda v=validator, e=engine: v(e.model),
                   checkpoint_every=cfg.checkpoint_every, checkpoint=lambda p=phase: save(p),
                   record={"phase": phase.cfg.name}, desc=f"pretrain {phase.cfg.name}")
        seconds += time.perf_counter() - t0
        images += (engine.step - start) * cfg.data.batch_size
        log_data(phase)
        for k, v in tracker.record().items():
            skipped[k] = skipped.get(k, 0) + v

    checkpoint = save()
    if validator is None:  # resumed after the last step: validate at the final phase's size
        validator = PretrainValidator(world_for(cfg.data, phases[-1].image_size), tokenizer, device,
                                      cfg.data.val_size)
    train = [r for r in run_dir.metrics() if r.get("split") == "train"]
    results = {
        "steps": engine.step,
        "final_loss": train[-1]["loss"] if train else None,
        "logit_scale": train[-1]["logit_scale"] if train else None,  # a ZeRO-3 module holds only a shard
        **validator(engine.model),
        "train_seconds": seconds,
        "images_per_second": images / seconds if seconds else None,
        "checkpoint": str(checkpoint),
        "data": describe_sources(cfg.data.sources or [SourceConfig()]),
        "data_counts": skipped,
    }
    if is_main_process():
        run_dir.save_json("results.json", results)
    return results
