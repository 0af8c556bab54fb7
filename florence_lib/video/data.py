"""Clips for action recognition and text-video retrieval: world action clips, and video files listed in a CSV.

Every sample is a dict ``{"video", "label", "caption"}``. Training samples are one clip ``[C, T, H, W]``: frames
drawn with jitter (a random position in each segment, or a random start) and one random resized crop shared by
all frames (a crop that jumped between frames would invent motion). Test samples are the multi-view stack
``[V, C, T, H, W]``, V = temporal views x spatial crops (Video Swin / ViViT testing): temporal views at evenly
spread positions, spatial crops along the long side of a frame resized to the crop side (on square frames the
crops coincide).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..data.transforms import CLIP_MEAN, CLIP_STD, video_train_transform
from ..data.video import VideoClips, dense_indices, uniform_indices
from ..data.world import World, WorldConfig
from .config import VideoDataConfig


def frame_indices(num_available: int, cfg: VideoDataConfig, num_clips: int, jitter: bool) -> torch.Tensor:
    """[num_clips, cfg.num_frames] frame indices by the config's sampling scheme."""
    if cfg.sampling == "uniform":
        return uniform_indices(num_available, cfg.num_frames, num_clips, jitter)
    return dense_indices(num_available, cfg.num_frames, cfg.frame_stride, num_clips, jitter)


def spatial_crops(video: torch.Tensor, size: int, crops: int) -> torch.Tensor:
    """uint8 ``[T, C, H, W]`` -> ``[crops, T, C, size, size]``: short side resized to ``size``, then ``crops``
    squares evenly spaced along the long side (the centre one for a single crop)."""
    video = v2.functional.resize(video, size, antialias=True)
    h, w = video.shape[-2:]
    long_side = max(h, w)
    starts = [(long_side - size) // 2] if crops == 1 else \
        [round(i * (long_side - size) / (crops - 1)) for i in range(crops)]
    top, left = (h - size) // 2, (w - size) // 2
    views = [video[..., s:s + size, left:left + size] if h > w else video[..., top:top + size, s:s + size]
             for s in starts]
    return torch.stack(views)


_NORMALISE = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD)])


class ClipViews:
    """uint8 frames ``[T_all, C, H, W]`` -> a training clip ``[C, T, H, W]`` or the test views ``[V, C, T, H, W]``."""

    def __init__(self, cfg: VideoDataConfig, train: bool, temporal_views: int = 1, spatial_crops: int = 1) -> None:
        self.cfg, self.train = cfg, train
        self.temporal_views, self.spatial_crops = temporal_views, spatial_crops
        self.augment = video_train_transform(cfg.image_size, scale=tuple(cfg.crop_scale), hflip=cfg.hflip)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.train:
            index = frame_indices(len(frames), self.cfg, 1, jitter=True)[0]
            clip = self.augment(tv_tensors.Video(frames[index]))
            return clip.as_subclass(torch.Tensor).permute(1, 0, 2, 3)
        index = frame_indices(len(frames), self.cfg, self.temporal_views, jitter=False)
        views = [spatial_crops(frames[i], self.cfg.image_size, self.spatial_crops) for i in index]
        views = torch.cat(views)  # [V, T, C, S, S], temporal-major
        return _NORMALISE(tv_tensors.Video(views)).as_subclass(torch.Tensor).permute(0, 2, 1, 3, 4)


def world_for(cfg: VideoDataConfig, world_seed: int) -> World:
    """The world whose clips are ``cfg.clip_length`` frames long (seed: the checkpoint's world by default)."""
    return World(WorldConfig(seed=world_seed, clip_length=cfg.clip_length))


class WorldActionClips(Dataset):
    """The world's action clips (10 actions, chance 0.1) with their captions, rendered on demand."""

    def __init__(self, world: World, split: str, size: int, views: ClipViews, image_size: int) -> None:
        self.world, self.split, self.size, self.views, self.image_size = world, split, size, views, image_size
        self.classes = list(world.actions)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} clips")
        clip = self.world.clip(self.split, index, image_size=self.image_size)
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(0, 3, 1, 2)
        return {"video": self.views(frames), "label": clip.label, "caption": clip.caption}


class FileClips(Dataset):
    """Video files of a CSV through the PyAV loader (:class:`~florence_lib.data.video.VideoClips`):
    Kinetics-style ``path,label`` (paths relative to the CSV), or ``file,label`` with ``path_column="file"``
    (the clips in ``shared/data/video``). An unreadable file is counted and skipped (the item is None)."""

    def __init__(self, csv: str | Path, views: ClipViews, classes: list[str] | None = None,
                 path_column: str = "path", strict: bool = False) -> None:
        csv = Path(csv)
        if not csv.is_file():
            raise FileNotFoundError(f"{csv}: annotation CSV not found")
        # every frame up to the last one needed is decoded anyway; sampling happens in ``views``
        self.files = VideoClips(csv.parent, labels_file=csv.name, classes=classes, path_column=path_column,
                                strict=strict, sampling="uniform", num_frames=_MAX_DECODED)
        self.views, self.classes = views, self.files.classes

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = self.files[index]
        if item is None:
            return None
        frames, label = item
        return {"video": self.views(frames[0]), "label": label, "caption": self.classes[label]}


_MAX_DECODED = 64  # frames decoded per file, evenly spread, from which clips are sampled


def action_datasets(cfg: VideoDataConfig, world_seed: int, temporal_views: int, crops: int
                    ) -> tuple[Dataset, Dataset, list[str]]:
    """(train set, multi-view test set, class names) for ``cfg``."""
    train_views = ClipViews(cfg, train=True)
    test_views = ClipViews(cfg, train=False, temporal_views=temporal_views, spatial_crops=crops)
    if cfg.dataset == "world":
        world = world_for(cfg, world_seed)
        train = WorldActionClips(world, "train", cfg.train_size, train_views, cfg.image_size)
        test = WorldActionClips(world, "test", cfg.test_size, test_views, cfg.image_size)
        return train, test, train.classes
    train = FileClips(cfg.csv, train_views)
    test = FileClips(cfg.test_csv, test_views, classes=train.classes)
    return train, test, train.classes
