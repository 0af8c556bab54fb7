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

RECOGNIZER = "video_action_recognizer"
"""Model spec name stored with an action recognizer's weights."""


def video_encoder(unicl: UniCLModel, cfg: VideoModelConfig) -> VideoCoSwin:
    """The UniCL image tower as a Video CoSwin: inflated (``cfg.init == "inflate"``) or randomly initialised."""
    overrides = cfg.video_overrides()
    if cfg.init == "inflate":
        return inflate(unicl.image_encoder, unicl.config.image, **overrides)
    return VideoCoSwin(VideoCoSwinConfig.from_image(unicl.config.image, **overrides))


class ActionRecognizer(nn.Module):
    """Video CoSwin + dropout + a linear head on the pooled features: clips [B, C, T, H, W] -> logits."""

    def __init__(self, backbone: VideoCoSwin, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.num_features, num_classes)
        # Small random weights, not zeros: a zero head passes no gradient to the backbone, and the 2D features
        # it starts from carry no linear signal about motion, so a zero head would stay at zero (a saddle).
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(clips)))

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()} | {"head.bias"}

    def spec(self) -> dict[str, object]:
        """What :func:`load_recognizer` rebuilds the module from (stored with the weights)."""
        return {"name": RECOGNIZER, "kwargs": {"video": to_dict(self.backbone.config),
                                               "num_classes": self.head.out_features,
                                               "dropout": self.dropout.p}}


def load_recognizer(path: str | Path, device: str | torch.device = "cpu") -> ActionRecognizer:
    """An :class:`ActionRecognizer` saved by ``video train`` (checkpoint dir, weights file or run dir)."""
    spec = read_model_spec(path)
    if spec.get("name") != RECOGNIZER:
        raise ValueError(f"{path}: holds a {spec.get('name')!r} model, not a video action recognizer")
    kwargs = spec["kwargs"]
    backbone = VideoCoSwin(from_dict(VideoCoSwinConfig, kwargs["video"]))
    model = ActionRecognizer(backbone, int(kwargs["num_classes"]), float(kwargs["dropout"]))
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
        self.video_encoder = video_encoder(unicl, dataclasses.replace(cfg, init="inflate", drop_path_rate=0.0))

    def encode_video(self, clips: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.unicl.image_projection(self.video_encoder(clips)), dim=-1)

    def encode_video_mean(self, clips: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = clips.shape
        frames = clips.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        per_frame = self.unicl.encode_image(frames).view(b, t, -1)
        return F.normalize(per_frame.mean(1), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.unicl.encode_text(input_ids, attention_mask)
