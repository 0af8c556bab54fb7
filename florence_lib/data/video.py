"""Video clips decoded with PyAV, with the two frame-sampling schemes of video recognition.

- ``uniform`` (TSN-style): the clip is cut into T equal segments and one frame is taken from each, so T frames
  always cover the whole video; multi-clip views shift the position inside the segments.
- ``dense`` (I3D/Swin-style): T frames ``stride`` apart from one start; multi-clip views spread the starts
  evenly over the video (the centre clip for one view).

``jitter=True`` draws the positions at random instead (training augmentation; seed torch to reproduce).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch

from .errors import BadSampleLog, read_table


def uniform_indices(
    num_frames: int, num_samples: int, num_clips: int = 1, jitter: bool = False
) -> torch.Tensor:
    """[num_clips, num_samples] frame indices, one per equal segment of the video."""
    if jitter:
        offsets = torch.rand(num_clips, num_samples)
    else:
        offsets = ((torch.arange(num_clips) + 0.5) / num_clips)[:, None].expand(num_clips, num_samples)
    positions = (torch.arange(num_samples) + offsets) * (num_frames / num_samples)
    return positions.long().clamp(max=num_frames - 1)


def dense_indices(
    num_frames: int, num_samples: int, stride: int, num_clips: int = 1, jitter: bool = False
) -> torch.Tensor:
    """[num_clips, num_samples] indices ``stride`` apart; a video shorter than that repeats its last frame."""
    room = max(num_frames - ((num_samples - 1) * stride + 1), 0)
    if jitter:
        starts = torch.randint(0, room + 1, (num_clips,))
    elif num_clips == 1:
        starts = torch.tensor([room // 2])
    else:
        starts = torch.linspace(0, room, num_clips).round().long()
    return (starts[:, None] + torch.arange(num_samples) * stride).clamp(max=num_frames - 1)


def frame_count(path: str | Path) -> int:
    """Frames in the first video stream: the container's count, else the number of packets demuxed."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for packet in container.demux(stream) if packet.size)


def decode_frames(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """RGB frames [len(indices), H, W, 3] (uint8) at ``indices``, decoding from the start up to the last one.

    Indices past the frames actually decoded (container counts can be off by a few) give the last frame.
    """
    wanted, frames = set(indices), {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= max(wanted):
                break
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    last = frames[max(frames)]
    return np.stack([frames.get(i, last) for i in indices])


class VideoClips(torch.utils.data.Dataset):
    """Labelled video files: ``root/<labels_file>`` lists ``file,label`` (Kinetics-style ``path,label`` with
    ``path_column="path"``); items are ``(clips, label)`` with
    clips a uint8 tensor [num_clips, T, C, H, W] (``transform`` maps each [T, C, H, W] clip: a v2 Resize).

    ``classes`` fixes the label vocabulary (e.g. the Kinetics-400 names); default: the sorted labels.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        num_frames: int = 8,
        stride: int = 2,
        sampling: Literal["uniform", "dense"] = "dense",
        num_clips: int = 1,
        jitter: bool = False,
        labels_file: str = "labels.csv",
        classes: Sequence[str] | None = None,
        strict: bool = False,
        log: BadSampleLog | None = None,
        path_column: str = "file",
    ):
        if sampling not in ("uniform", "dense"):
            raise ValueError(f"sampling must be 'uniform' or 'dense', got {sampling!r}")
        if num_frames < 1 or stride < 1 or num_clips < 1:
            raise ValueError(
                f"num_frames, stride, num_clips must be >= 1, got {num_frames}, {stride}, {num_clips}"
            )
        self.root, self.transform, self.table = Path(root), transform, Path(root) / labels_file
        self.num_frames, self.stride, self.sampling = num_frames, stride, sampling
        self.num_clips, self.jitter = num_clips, jitter
        self.log = log if log is not None else BadSampleLog(strict, name=str(self.table), echo=True)
        rows = list(read_table(self.table, (path_column, "label"), self.log))
        self.classes = list(classes) if classes is not None else sorted({row["label"] for _, row in rows})
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[Path, int, int]] = []
        for line, row in rows:
            path = self.root / row[path_column]
            if row["label"] not in index:
                self.log.bad("unknown_label", self.table, line, row["label"])
            elif not path.is_file():
                self.log.bad("missing_file", self.table, line, str(path))
            else:
                self.samples.append((path, index[row["label"]], line))
        self.log.report()

    def clip_indices(self, num_frames: int) -> torch.Tensor:
        if self.sampling == "uniform":
            return uniform_indices(num_frames, self.num_frames, self.num_clips, self.jitter)
        return dense_indices(num_frames, self.num_frames, self.stride, self.num_clips, self.jitter)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        path, label, line = self.samples[index]
        try:
            indices = self.clip_indices(frame_count(path))
            frames = decode_frames(path, indices.flatten().tolist())
        except (av.error.FFmpegError, IndexError, ValueError) as exc:  # IndexError: no video stream
            self.log.bad("unreadable_video", self.table, line, f"{path}: {exc}")
            return None
        clips = torch.from_numpy(frames).permute(0, 3, 1, 2).reshape(*indices.shape, 3, *frames.shape[1:3])
        if self.transform is not None:
            clips = torch.stack([self.transform(clip) for clip in clips])
        return clips, label
