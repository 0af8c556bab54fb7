"""Training and evaluating the Dynamic Head detector on the project's one engine.

``train_detector(cfg, run_dir)`` builds the detector (its CoSwin tower from a UniCL checkpoint when given,
frozen or fine-tuned), trains it with the ATSS objective through :class:`~florence_lib.training.engine.Engine`
(checkpoints every ``checkpoint_every`` steps, exact resume from the newest one in ``run_dir/checkpoints``),
evaluates COCO-style and writes ``detections_<split>.json`` (COCO results) and ``results.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import from_dict, to_dict
from ..distributed import intra_op_threads
from ..losses.detection import atss_loss
from ..models.coswin import CoSwin, CoSwinConfig
from ..models.dyhead import DyHeadDetector, create_detector, decode_boxes, detector_config
from ..runs import RunDir, seed_everything
from ..training.checkpoint import latest_checkpoint, load_checkpoint, load_weights, read_model_spec
from ..training.engine import Engine, resolve_device
from ..training.optim import param_groups
from ..training.schedules import build_scheduler
from .coco_eval import coco_evaluate, coco_ground_truth, coco_results, save_results
from .config import DetectConfig
from .data import DetectionSource, WorldBoxes, build_source, eval_batches, train_batches
from .postprocess import InferenceConfig, postprocess

KIND = "dyhead_detector"


# ------------------------------------------------------------------------------------------------ model
def unicl_image_tower(checkpoint: str | Path) -> tuple[CoSwin, dict[str, Any]]:
    """The CoSwin tower of a UniCL checkpoint, and the whole UniCL model's config (for the text side)."""
    model, _ = load_checkpoint(checkpoint)
    return model.image_encoder, to_dict(model.config)


def build_detector(cfg: DetectConfig, num_classes: int) -> tuple[DyHeadDetector, dict[str, Any]]:
    """The detector of ``cfg`` and the spec that rebuilds it (``kind``, detector config, backbone config)."""
    overrides = {k: v for k, v in (("channels", cfg.channels), ("num_blocks", cfg.num_blocks)) if v is not None}
    det_cfg = detector_config(cfg.detector, num_classes=num_classes, **overrides)
    backbone = None
    if cfg.checkpoint is not None:
        backbone, unicl_cfg = unicl_image_tower(cfg.checkpoint)
        backbone_cfg = unicl_cfg["image"]
    else:
        from ..models.presets import IMAGE_ENCODERS

        backbone_cfg = to_dict(IMAGE_ENCODERS.create(det_cfg.backbone))
    model = create_detector(det_cfg, backbone if backbone is not None
                            else CoSwin.from_config(from_dict(CoSwinConfig, backbone_cfg)))
    model.freeze_backbone(cfg.freeze_backbone)
    return model, {"name": KIND, "detector": to_dict(det_cfg), "backbone": backbone_cfg}


def detector_from_spec(spec: dict[str, Any]) -> DyHeadDetector:
    from ..models.dyhead import DyHeadConfig

    if spec.get("name") != KIND:
        raise ValueError(f"checkpoint holds {spec.get('name')!r}, not a {KIND}")
    backbone = CoSwin.from_config(from_dict(CoSwinConfig, spec["backbone"]))
    return create_detector(from_dict(DyHeadConfig, spec["detector"]), backbone)


def load_detector(checkpoint: str | Path, device: str | torch.device = "cpu") -> DyHeadDetector:
    """A detector saved by :func:`train_detector` (checkpoint dir, weights file or run dir), in eval mode."""
    model = detector_from_spec(read_model_spec(checkpoint))
    model.load_state_dict(load_weights(checkpoint))
    return model.to(device).eval()


# -------------------------------------------------------------------------------------------- objective
def detection_objective(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """ATSS loss of one batch (``images``, ``targets``): the engine's ``objective(model, batch)``."""
    out = model(batch["images"])
    device = batch["images"].device
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
    pred_boxes = decode_boxes(out["box_deltas"].float(), out["anchors"])
    return atss_loss(out["cls_logits"].float(), pred_boxes, out["centerness"].float(), out["anchors"],
                     out["num_anchors"], targets)


def build_optimizer(model: DyHeadDetector, cfg: DetectConfig) -> torch.optim.AdamW:
    """AdamW: the head at ``lr``, a fine-tuned tower at ``backbone_lr``; no decay on norms and biases."""
    head = nn.ModuleDict({n: m for n, m in model.named_children() if n != "backbone"})
    groups = [{**g, "lr": cfg.lr} for g in param_groups(head, cfg.weight_decay)]
    if not cfg.freeze_backbone:
        groups += [{**g, "lr": cfg.backbone_lr} for g in param_groups(model.backbone, cfg.weight_decay)]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, betas=(0.9, 0.999))


# ------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(model: DyHeadDetector, source: DetectionSource, side: int, limit: int | None, batch_size: int = 16,
            device: torch.device | str = "cpu", inference: InferenceConfig | None = None
            ) -> tuple[list[dict], list[dict], list[tuple[int, int]]]:
    """(detections, targets, image sizes) over the first ``limit`` samples of ``source`` at ``side``."""
    was_training = model.training
    model.eval()
    dets, targets, sizes = [], [], []
    for _, batch in tqdm(list(eval_batches(source, side, batch_size, limit)), desc="detect", leave=False):
        out = model(batch["images"].to(device))
        dets += postprocess(out, batch["image_sizes"], inference)
        targets += batch["targets"]
        sizes += batch["image_sizes"]
    model.train(was_training)
    return dets, targets, sizes


def evaluate_detector(model: DyHeadDetector, source: DetectionSource, side: int, limit: int | None,
                      device: torch.device | str = "cpu", results_path: str | Path | None = None
                      ) -> dict[str, Any]:
    """COCO metrics of ``model`` on ``source``; the detections go to ``results_path`` as COCO results JSON."""
    dets, targets, sizes = predict(model, source, side, limit, device=device)
    gt = coco_ground_truth(targets, sizes, source.categories)
    results = coco_results(dets)
    if results_path is not None:
        save_results(results_path, results)
    # The localisation ceiling beside the labels' AP: every box and detection as one class.
    agnostic_gt = coco_ground_truth([{**t, "labels": torch.zeros_like(t["labels"])} for t in targets], sizes,
                                    ["object"])
    agnostic = coco_evaluate(agnostic_gt, [{**r, "category_id": 1} for r in results])
    return {**coco_evaluate(gt, results), "AP50_class_agnostic": agnostic["AP50"],
            "AP_class_agnostic": agnostic["AP"], "num_images": len(sizes)}


# ------------------------------------------------------------------------------------------------ train
def train_detector(cfg: DetectConfig, run_dir: str | Path | RunDir, *, label_by: str = "shape",
                   evaluate_at_end: bool = True) -> dict[str, Any]:
    """Train as ``cfg`` says (resuming from ``run_dir``'s newest checkpoint), evaluate, return the results."""
    with intra_op_threads(cfg.threads):
        return _train(cfg, run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir), label_by,
                      evaluate_at_end)


def _sources(cfg: DetectConfig, label_by: str) -> tuple[DetectionSource, DetectionSource]:
    d = cfg.data
    from ..runs import data_root_or_none

    root = data_root_or_none(d.data_root) if d.dataset != "world" else None
    train = build_source(d.dataset, "train", data_root=root, world_seed=d.world_seed, size=d.train_images,
                         label_by=label_by)
    test = build_source(d.dataset, "test", data_root=root, world_seed=d.world_seed, size=d.eval_images,
                        label_by=label_by)
    return train, test


def _train(cfg: DetectConfig, run_dir: RunDir, label_by: str, evaluate_at_end: bool) -> dict[str, Any]:
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    train_set, test_set = _sources(cfg, label_by)
    resume_from = latest_checkpoint(run_dir.path / "checkpoints")
    run_dir.start(cfg, seed=cfg.seed, command="detect train", resumed_from=resume_from)
    if resume_from is None:
        model, spec = build_detector(cfg, len(train_set.categories))
    else:
        spec = read_model_spec(resume_from)
        model = detector_from_spec(spec)
        model.load_state_dict(load_weights(resume_from))
        model.freeze_backbone(cfg.freeze_backbone)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
    engine = Engine(model, detection_objective, optimizer, scheduler, device=device, precision=cfg.precision,
                    grad_clip=cfg.grad_clip or None)
    if resume_from is not None:
        engine.resume(resume_from)

    def save() -> Path:
        return engine.save(run_dir.checkpoints, model_spec=spec, config=cfg, keep=2)

    val_set = (WorldBoxes(train_set.world, "val", 64, label_by) if isinstance(train_set, WorldBoxes)
               else test_set)
    evaluate: Callable[[], dict[str, float]] = lambda: {  # noqa: E731
        k: v for k, v in evaluate_detector(model, val_set, cfg.data.image_size, 64, device).items()
        if k in ("AP", "AP50")}
    batches = train_batches(train_set, cfg.batch_size, cfg.data.train_sizes, cfg.data.hflip, cfg.seed,
                            engine.step)
    start, t0 = engine.step, time.perf_counter()
    engine.fit(batches, cfg.steps, run_dir=run_dir, log_every=cfg.log_every,
               eval_every=cfg.eval_every, evaluate=evaluate, checkpoint_every=cfg.checkpoint_every,
               checkpoint=save, desc="detect train")
    seconds = time.perf_counter() - t0
    checkpoint = save()
    results: dict[str, Any] = {"steps": engine.step, "train_seconds": seconds, "checkpoint": str(checkpoint),
                               "train_images_per_second": (engine.step - start) * cfg.batch_size / seconds
                               if seconds > 0 and engine.step > start else None}
    if evaluate_at_end:
        results.update(evaluate_detector(model, test_set, cfg.data.image_size, cfg.data.eval_images, device,
                                         run_dir.path / "detections_test.json"))
    run_dir.save_json("results.json", results)
    return results

