"""VideoConfig: everything ``python -m florence_lib video train|evaluate|retrieval`` and notebook 11 need.

Profiles in ``florence_lib/configs/video/{smoke,quick,paper}.yaml``. Assumptions where the paper is silent
(Florence §3.8-3.9 gives the views, 4 x 3, and the tasks, not the recipe) follow Video Swin's Kinetics recipe:
AdamW, cosine decay with linear warmup, label smoothing 0.1, head dropout 0.5, stochastic depth, frame-consistent
random resized crops. Horizontal flips are off by default: in the world they turn "moving left" into "moving
right" without changing the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import ConfigError, field


@dataclass
class VideoModelConfig:
    """The Video CoSwin built from the UniCL image tower: its widths and depths, with time added."""

    init: Literal["inflate", "scratch"] = field("inflate", help="inflate the 2D UniCL weights, or random init")
    temporal_kernel: int = field(2, min=1, help="tube embedding temporal kernel (Video Swin: 2)")
    temporal_stride: int = field(2, min=1, help="tube embedding temporal stride")
    merge_temporal_kernel: int = field(1, min=1, help="3D conv patch merging temporal kernel")
    merge_temporal_stride: int = field(1, min=1, help="3D conv patch merging temporal stride")
    temporal_window: list[int] = field(default_factory=lambda: [2, 2, 4, 4], min=1,
                                       help="temporal window per stage (one value: all stages)")
    window_size: list[int] | None = field(None, min=1, help="spatial window per stage; null: the 2D tower's")
    inflate_stages: int | None = field(
        None, min=0, help="inflate only the first N stages, the rest random (null: all, Video Swin)")
    inflate_time_bias: float = field(
        0.0, min=0.0, max=100.0,
        help="inflation: attention bias subtracted per frame of temporal offset (0: Video Swin's plain copy)")
    drop_path_rate: float = field(0.1, min=0.0, max=1.0, help="stochastic depth")
    dropout: float = field(0.5, min=0.0, max=0.99, help="dropout before the classification head")
    pool: Literal["mean", "mean_diff"] = field(
        "mean_diff", help="head input: mean over (T, H, W) (Video Swin), or that and late-minus-early change")

    def video_overrides(self) -> dict[str, object]:
        """The :class:`~florence_lib.models.video_coswin.VideoCoSwinConfig` keys set here."""
        out: dict[str, object] = {
            "temporal_kernel": self.temporal_kernel, "temporal_stride": self.temporal_stride,
            "merge_temporal_kernel": self.merge_temporal_kernel, "merge_temporal_stride": self.merge_temporal_stride,
            "temporal_window": tuple(self.temporal_window), "drop_path_rate": self.drop_path_rate}
        if self.window_size is not None:
            out["window_size"] = tuple(self.window_size)
        return out


@dataclass
class VideoDataConfig:
    dataset: Literal["world", "csv"] = field("world", help="world action clips, or a path,label CSV")
    csv: str | None = field(None, help="dataset=csv: train CSV with columns path,label")
    test_csv: str | None = field(None, help="dataset=csv: test CSV (path,label); paths relative to the CSV")
    world_seed: int | None = field(None, min=0, help="world seed; null: the one the checkpoint was trained on")
    clip_length: int = field(16, min=2, max=64, help="world: frames rendered per clip")
    num_frames: int = field(8, min=1, help="frames sampled per clip (the model's T)")
    sampling: Literal["uniform", "dense"] = field("uniform", help="one frame per segment, or frames stride apart")
    frame_stride: int = field(2, min=1, help="dense sampling: frames between samples")
    image_size: int = field(48, min=16, max=1024, help="crop side in pixels")
    train_size: int = field(4000, min=1, help="world: training clips")
    test_size: int = field(300, min=1, help="world: test clips")
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0], min=0.05, max=1.0,
                                    help="random resized crop area range (one crop for all frames)")
    hflip: float = field(0.0, min=0.0, max=1.0, help="horizontal flip probability (off: flips swap left/right)")

    def validate(self) -> None:
        if len(self.crop_scale) != 2 or self.crop_scale[0] > self.crop_scale[1]:
            raise ConfigError(f"crop_scale: {self.crop_scale} must be [low, high] with low <= high")
        if self.dataset == "csv" and (self.csv is None or self.test_csv is None):
            raise ConfigError("csv: dataset=csv needs both csv and test_csv")


@dataclass
class VideoTrainConfig:
    steps: int = field(400, min=1)
    batch_size: int = field(16, min=1)
    lr: float = field(1e-3, min=0.0, max=1.0, help="peak AdamW lr")
    backbone_lr: float | None = field(None, min=0.0, max=1.0,
                                      help="peak lr of the Video CoSwin backbone; null: lr (the head keeps lr)")
    weight_decay: float = field(0.05, min=0.0, max=1.0)
    warmup_steps: int = field(40, min=0)
    label_smoothing: float = field(0.1, min=0.0, max=0.99)
    grad_clip: float = field(1.0, min=0.0)
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: int = field(10, min=0)
    checkpoint_every: int = field(0, min=0, help="0: only at the end")


@dataclass
class VideoEvalConfig:
    """Multi-view testing (paper: 4 temporal clips x 3 spatial crops), softmax probabilities averaged."""

    temporal_views: int = field(4, min=1)
    spatial_crops: int = field(3, min=1)
    batch_size: int = field(8, min=1, help="clips per forward pass (each with all its views)")


@dataclass
class VideoRetrievalConfig:
    gallery_size: int = field(200, min=2, help="world: test clips, each with its caption")
    ks: list[int] = field(default_factory=lambda: [1, 5, 10], min=1)
    batch_size: int = field(16, min=1)


@dataclass
class VideoConfig:
    checkpoint: str | None = field(None, help="UniCL checkpoint (dir, weights or run dir); null: untrained")
    unicl_model: str = field("unicl_tiny", help="UniCL preset when checkpoint is null")
    model: VideoModelConfig = field(default_factory=VideoModelConfig)
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    train: VideoTrainConfig = field(default_factory=VideoTrainConfig)
    eval: VideoEvalConfig = field(default_factory=VideoEvalConfig)
    retrieval: VideoRetrievalConfig = field(default_factory=VideoRetrievalConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = field(1, min=1, help="torch CPU threads; null: torch's default")
    seed: int = field(0, min=0)

    def validate(self) -> None:
        if self.train.warmup_steps >= self.train.steps:
            raise ConfigError(f"train.warmup_steps: {self.train.warmup_steps} must be below train.steps "
                              f"{self.train.steps}")
