"""The adapter's protocols end to end, shared by ``python -m florence_lib video`` and notebook 11.

:class:`VideoAdapter` holds a UniCL model (a checkpoint, else an untrained preset, labelled so) and a
:class:`~florence_lib.video.config.VideoConfig`; each method runs one protocol and returns flat metrics records
(``{"task", "dataset", ...}``) plus what a notebook plots.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from ..data.tokenizer import Tokenizer
from ..evaluation.evaluator import load_model
from ..runs import RunDir, seed_everything
from ..training.engine import resolve_device
from .config import VideoConfig
from .data import ClipViews, WorldActionClips, action_datasets, world_for
from .model import ActionRecognizer, VideoTextModel, load_recognizer, video_encoder
from .recognition import evaluate_recognizer, train_recognizer
from .retrieval import zero_shot_video_retrieval


@dataclasses.dataclass
class Result:
    records: list[dict[str, Any]]
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class VideoAdapter:
    def __init__(self, cfg: VideoConfig) -> None:
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.unicl, self.label, train_cfg = load_model(cfg.checkpoint, cfg.unicl_model, cfg.seed, self.device)
        trained_on = (train_cfg.get("data") or {}).get("world_seed", 0)
        self.world_seed = cfg.data.world_seed if cfg.data.world_seed is not None else int(trained_on)

    def _record(self, task: str, **metrics: Any) -> dict[str, Any]:
        c = self.cfg
        return {"task": task, "dataset": c.data.dataset, "model": self.label, "checkpoint": c.checkpoint,
                "num_frames": c.data.num_frames, "image_size": c.data.image_size, **metrics}

    # ------------------------------------------------------------------------------------ action recognition
    def datasets(self) -> tuple[Any, Any, list[str]]:
        c = self.cfg
        return action_datasets(c.data, self.world_seed, c.eval.temporal_views, c.eval.spatial_crops)

    def action_recognition(self, init: str | None = None, run_dir: RunDir | None = None) -> Result:
        """Fine-tune a Video CoSwin (``init``: inflate | scratch; default the config's) and test it 4x3-view.
        Task ``action_recognition`` for the inflated model, ``action_recognition_scratch`` for the baseline."""
        c = self.cfg
        model_cfg = dataclasses.replace(c.model, init=init or c.model.init)
        seed_everything(c.seed)
        train, test, classes = self.datasets()
        model = ActionRecognizer(video_encoder(self.unicl, model_cfg), len(classes), model_cfg.dropout,
                                 model_cfg.pool)
        start = time.perf_counter()
        curve = train_recognizer(model, train, c.train, device=self.device, seed=c.seed, run_dir=run_dir,
                                 spec=model.spec(), config=c, task=f"action_recognition_{model_cfg.init}")
        seconds = time.perf_counter() - start
        result = evaluate_recognizer(model, test, batch_size=c.eval.batch_size, device=self.device)
        task = "action_recognition" if model_cfg.init == "inflate" else "action_recognition_scratch"
        metrics = {k: v for k, v in result.metrics.items() if k != "views"}  # "4x3" below says more
        record = self._record(task, **metrics, init=model_cfg.init, steps=c.train.steps,
                              views=f"{c.eval.temporal_views}x{c.eval.spatial_crops}", chance=1 / len(classes),
                              train_seconds=round(seconds, 1), num_train=len(train))
        return Result([record], {"model": model, "result": result, "classes": classes, "test": test,
                                 "curve": curve})

    def evaluate_recognizer(self, checkpoint: str | Path) -> Result:
        """Multi-view test of an action recognizer saved by ``video train``."""
        model = load_recognizer(checkpoint, self.device)
        _, test, classes = self.datasets()
        result = evaluate_recognizer(model, test, batch_size=self.cfg.eval.batch_size, device=self.device)
        c = self.cfg
        metrics = {k: v for k, v in result.metrics.items() if k != "views"}
        record = self._record("action_recognition", **metrics, recognizer=str(checkpoint),
                              views=f"{c.eval.temporal_views}x{c.eval.spatial_crops}", chance=1 / len(classes))
        return Result([record], {"model": model, "result": result, "classes": classes, "test": test})

    # ------------------------------------------------------------------------------------ retrieval
    def retrieval_clips(self) -> WorldActionClips:
        c = self.cfg
        if c.data.dataset != "world":
            raise ValueError("retrieval: only the world has captions per clip; set data.dataset=world")
        views = ClipViews(c.data, train=False, temporal_views=1, spatial_crops=1)
        return WorldActionClips(world_for(c.data, self.world_seed), "test", c.retrieval.gallery_size, views,
                                c.data.image_size)

    def retrieval(self) -> Result:
        """Zero-shot text-to-video retrieval: the inflated image tower (task ``video_retrieval``) and the
        frame-mean baseline (``video_retrieval_meanp``), nothing trained."""
        c = self.cfg
        clips = self.retrieval_clips()
        model = VideoTextModel(self.unicl, c.model)
        out = zero_shot_video_retrieval(model, clips, Tokenizer(), ks=c.retrieval.ks,
                                        batch_size=c.retrieval.batch_size, device=self.device)
        records = [self._record(task, **out[key], num_clips=len(clips), chance_r1=1 / len(clips))
                   for task, key in (("video_retrieval", "inflated"), ("video_retrieval_meanp", "mean_pool"))]
        return Result(records, {"similarity": out["similarity"], "captions": out["captions"], "clips": clips,
                                "model": model})


@torch.no_grad()
def inflation_check(adapter: VideoAdapter, frames: tuple[int, ...] = (1, 4, 8), sizes: tuple[int, ...] = (32, 48),
                    index: int = 0) -> list[dict[str, Any]]:
    """A still clip (one world scene repeated) through the inflated tower against the 2D tower on the scene:
    the largest feature difference per (frames, size), next to the feature scale."""
    from ..data.transforms import tensor_transform

    image_tower = adapter.unicl.image_encoder.eval()
    video = VideoTextModel(adapter.unicl, adapter.cfg.model).video_encoder.eval()
    world = world_for(adapter.cfg.data, adapter.world_seed)
    rows = []
    for size in sizes:
        frame = tensor_transform()(world.scene("test", index, image_size=size).image)[None].to(adapter.device)
        want = image_tower(frame)
        for t in frames:
            got = video(frame[:, :, None].expand(-1, -1, t, -1, -1))
            rows.append({"frames": t, "size": size, "max_abs_diff": (got - want).abs().max().item(),
                         "feature_scale": want.abs().max().item()})
    return rows


def pretraining_checkpoint(run_dir: str | Path | None) -> Path | None:
    """The checkpoint notebook 02 left in the series run directory, if any (as notebooks 03-07 use)."""
    from ..evaluation.evaluator import pretraining_checkpoint as find

    return find(run_dir)


def notebook_adapter(notebook: str, *, profile: str, run_dir: str | Path | None, checkpoint: str | Path | None,
                     seed: int, overrides: tuple[str, ...] = ()) -> tuple[VideoAdapter, RunDir]:
    """What notebook 11 starts with: the profile's VideoConfig, the UniCL checkpoint (given, else notebook 02's,
    else an untrained model, labelled so) and the notebook's output directory."""
    from ..config import load_config
    from ..runs import notebook_run_dir

    out = notebook_run_dir(run_dir, notebook)
    ckpt = checkpoint if checkpoint is not None else pretraining_checkpoint(run_dir)
    cfg = load_config(VideoConfig, command="video", profile=profile, overrides=[f"seed={seed}", *overrides])
    cfg.checkpoint = str(ckpt) if ckpt is not None else None
    out.start(cfg, seed=seed)
    return VideoAdapter(cfg), out
