"""The Video CoSwin adapter's modules: an action classifier and the zero-shot video-text model.

Both start from a UniCL model. The video encoder has the image tower's widths, depths and windows with time
added (:class:`~florence_lib.video.config.VideoModelConfig`), and its weights either inflated from the 2D tower
or drawn at random (the from-scratch baseline).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model
from torch import nn

from ..config import from_dict, to_dict
from ..models.unicl import UniCLModel
from ..models.video_coswin import VideoCoSwin, VideoCoSwinConfig, inflate
from ..training.checkpoint import WEIGHTS, read_model_spec, resolve_checkpoint
from .config import VideoModelConfig

POOLS = ("mean", "mean_diff")
"""How :class:`ActionRecognizer` pools the final map over time before its head."""
RECOGNIZER = "video_action_recognizer"
"""Model spec name stored with an action recognizer's weights."""


def video_encoder(unicl: UniCLModel, cfg: VideoModelConfig) -> VideoCoSwin:
    """The UniCL image tower as a Video CoSwin: inflated (``cfg.init == "inflate"``) or randomly initialised."""
    overrides = cfg.video_overrides()
    if cfg.init == "inflate":
        return inflate(unicl.image_encoder, unicl.config.image, time_bias=cfg.inflate_time_bias,
                       stages=cfg.inflate_stages, **overrides)
    return VideoCoSwin(VideoCoSwinConfig.from_image(unicl.config.image, **overrides))


def mean_and_change(per_step: torch.Tensor) -> torch.Tensor:
    """[B, T, C] -> [B, 2C]: the mean over time, and the mean of the last T // 2 steps minus that of the first
    T // 2 (zero for T = 1). Reversing time keeps the first half and negates the second."""
    half = per_step.shape[1] // 2
    if half == 0:
        return torch.cat([per_step.mean(1), torch.zeros_like(per_step[:, 0])], dim=1)
    return torch.cat([per_step.mean(1), per_step[:, -half:].mean(1) - per_step[:, :half].mean(1)], dim=1)


class ActionRecognizer(nn.Module):
    """Video CoSwin + temporal pooling + dropout + a linear head: clips [B, C, T, H, W] -> logits.

    ``pool="mean"`` is Video Swin's I3D head: the final map averaged over (T, H, W). That average is blind to
    the order of time, and on the world's motions (left vs right, appearing vs disappearing: the same frames in
    the opposite order) a tiny model cannot learn order-aware local features before that pooling throws order
    away: measured on the quick profile, top-1 stayed at chance (0.08-0.14) for 800-2400 steps at every lr tried.
    ``pool="mean_diff"`` (default) also hands the head the late-minus-early difference of the space-averaged map
    (mean of the second half of the time steps minus the first half), so "what changed" reaches the head
    linearly: a linear probe on the untrained inflated features rises from 0.15 (mean) to 0.41 with it. Any
    number of frames works; a one-step map has a zero difference.
    """

    def __init__(self, backbone: VideoCoSwin, num_classes: int, dropout: float = 0.5,
                 pool: str = "mean_diff") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool: {pool!r} is not one of {POOLS}")
        self.backbone, self.pool = backbone, pool
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.num_features * (2 if pool == "mean_diff" else 1), num_classes)
        # Small random weights, not zeros: a zero head passes no gradient to the backbone, and the 2D features
        # it starts from carry no linear signal about motion, so a zero head would stay at zero (a saddle).
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def pooled(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, C] (mean) or [B, 2C] (mean, late - early) features of the final normalised map."""
        if self.pool == "mean":
            return self.backbone(clips)
        final = self.backbone.forward_features(clips)["features"][-1]  # [B, C, T, H, W]
        return mean_and_change(self.backbone.norm(final.permute(0, 2, 3, 4, 1)).mean((2, 3)))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pooled(clips)))

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()} | {"head.bias"}

    def spec(self) -> dict[str, object]:
        """What :func:`load_recognizer` rebuilds the module from (stored with the weights)."""
        return {"name": RECOGNIZER, "kwargs": {"video": to_dict(self.backbone.config),
                                               "num_classes": self.head.out_features,
                                               "dropout": self.dropout.p, "pool": self.pool}}


def load_recognizer(path: str | Path, device: str | torch.device = "cpu") -> ActionRecognizer:
    """An :class:`ActionRecognizer` saved by ``video train`` (checkpoint dir, weights file or run dir)."""
    spec = read_model_spec(path)
    if spec.get("name") != RECOGNIZER:
        raise ValueError(f"{path}: holds a {spec.get('name')!r} model, not a video action recognizer")
    kwargs = spec["kwargs"]
    backbone = VideoCoSwin(from_dict(VideoCoSwinConfig, kwargs["video"]))
    model = ActionRecognizer(backbone, int(kwargs["num_classes"]), float(kwargs["dropout"]),
                             str(kwargs.get("pool", "mean")))  # recognizers saved before pooling was an option
    load_model(model, str(resolve_checkpoint(path) / WEIGHTS), strict=True)
    return model.to(device).eval()


class VideoTextModel(nn.Module):
    """Zero-shot text-video retrieval (paper §3.9) from a UniCL model, nothing trained.

    ``encode_video``: the image tower inflated to 3D (patch embedding -> tube embedding, relative position bias
    copied along time: CoSwin's counterpart of ViViT's expanded patch and position embeddings), then the image
    projection. ``encode_video_mean``: CLIP4Clip's meanP baseline, the 2D tower on each frame, frame embeddings
    normalised, averaged and normalised again. ``encode_text``: the UniCL text tower.
    """

    def __init__(self, unicl: UniCLModel, cfg: VideoModelConfig) -> None:
        super().__init__()
        self.unicl = unicl
        self.video_encoder = video_encoder(unicl, dataclasses.replace(cfg, init="inflate", drop_path_rate=0.0,
                                                                       inflate_stages=None))

    def encode_video(self, clips: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.unicl.image_projection(self.video_encoder(clips)), dim=-1)

    def encode_video_mean(self, clips: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = clips.shape
        frames = clips.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        per_frame = self.unicl.encode_image(frames).view(b, t, -1)
        return F.normalize(per_frame.mean(1), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.unicl.encode_text(input_ids, attention_mask)
