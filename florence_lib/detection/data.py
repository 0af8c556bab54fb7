"""Detection samples and batches: the world's boxes and COCO instances behind one interface, multi-scale.

A :class:`DetectionSource` returns ``(uint8 image [3, H, W], {"boxes": [N, 4] xyxy, "labels": [N]})`` for an index
at a requested side: world scenes are rendered at that side (boxes scale exactly), COCO images are resized so
that their longer side is that side. :func:`train_batches` draws batches whose order and augmentation are a pure
function of (seed, step) -- the data half of exact resume -- with one side per step from ``train_sizes``.
Images are CLIP-normalised and zero-padded (bottom/right) to the largest image of the batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import CLIP_MEAN, CLIP_STD
from ..data.world import World, WorldConfig
from ..training.batches import StepSampler

Target = dict[str, torch.Tensor]


class DetectionSource(Protocol):
    categories: list[str]

    def __len__(self) -> int: ...

    def sample(self, index: int, side: int) -> tuple[torch.Tensor, Target]: ...


class WorldBoxes:
    """Scenes of one world split with their objects' boxes; ``label_by``: 'shape' (8 categories, the world's
    detection classes), 'shape_colour' (64) or 'object' (one class: proposals)."""

    def __init__(self, world: World, split: str, size: int, label_by: str = "shape") -> None:
        if label_by not in ("shape", "shape_colour", "object"):
            raise ValueError(f"label_by: {label_by!r} is not one of 'shape', 'shape_colour', 'object'")
        self.world, self.split, self.size, self.label_by = world, split, size, label_by
        from ..data.world_render import COLOUR_NAMES, SHAPES

        self.categories = {"shape": list(SHAPES), "object": ["object"],
                           "shape_colour": [f"{c} {s}" for s in SHAPES for c in COLOUR_NAMES]}[label_by]
        self._colours = len(COLOUR_NAMES)

    def __len__(self) -> int:
        return self.size

    def sample(self, index: int, side: int) -> tuple[torch.Tensor, Target]:
        scene = self.world.scene(self.split, index, image_size=side)
        if self.label_by == "shape":
            labels = [o.shape for o in scene.objects]
        elif self.label_by == "shape_colour":
            labels = [o.shape * self._colours + o.colour for o in scene.objects]
        else:
            labels = [0] * len(scene.objects)
        return (torch.from_numpy(scene.image).permute(2, 0, 1).contiguous(),
                {"boxes": torch.from_numpy(scene.boxes).float(), "labels": torch.tensor(labels, dtype=torch.long)})


class CocoBoxes:
    """COCO instances (``data_root/coco``), 80 categories, resized so that the longer side is ``side``."""

    def __init__(self, data_root: str | Path, split: str = "train2017") -> None:
        from ..data.coco import CocoDetection

        root = Path(data_root) / "coco"
        self.dataset = CocoDetection(root / split, root / "annotations" / f"instances_{split}.json")
        self.categories = list(self.dataset.classes)
        self.category_ids = list(self.dataset.category_ids)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int, side: int) -> tuple[torch.Tensor, Target]:
        item = self.dataset[index]
        if item is None:
            raise ValueError(f"{self.dataset.ann_file}: image {self.dataset.image_ids[index]} could not be read")
        image, target = item
        pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        scale = side / max(pixels.shape[1:])
        h, w = round(pixels.shape[1] * scale), round(pixels.shape[2] * scale)
        pixels = F.interpolate(pixels[None].float(), size=(h, w), mode="bilinear", antialias=True,
                               align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        boxes = target["boxes"].as_subclass(torch.Tensor).float() * scale
        keep = ~target["iscrowd"]
        return pixels, {"boxes": boxes[keep], "labels": target["labels"][keep]}


def normalise(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """uint8 images -> one CLIP-normalised float batch, zero-padded bottom/right; and the unpadded sizes."""
    sizes = [tuple(im.shape[1:]) for im in images]
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    batch = torch.zeros(len(images), 3, h, w)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[1], : im.shape[2]] = (im.float() / 255 - mean) / std
    return batch, sizes


def _hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def make_batch(samples: Sequence[tuple[torch.Tensor, Target]]) -> dict[str, Any]:
    images, sizes = normalise([s[0] for s in samples])
    return {"images": images, "targets": [s[1] for s in samples], "image_sizes": sizes}


def train_batches(source: DetectionSource, batch_size: int, train_sizes: Sequence[int], hflip: float,
                  seed: int, start_step: int = 0) -> Iterator[dict[str, Any]]:
    """Endless training batches from ``start_step`` on: the same batches an uninterrupted run draws."""
    sampler = StepSampler(len(source), batch_size, seed, start_step)
    for step, batch in enumerate(sampler, start_step):
        rng = np.random.default_rng([seed, step, 7])
        side = int(train_sizes[rng.integers(len(train_sizes))])
        flips = rng.random(len(batch)) < hflip
        samples = []
        for (index, _), flip in zip(batch, flips, strict=True):
            image, target = source.sample(index, side)
            samples.append(_hflip(image, target) if flip else (image, target))
        yield make_batch(samples)


def eval_batches(source: DetectionSource, side: int, batch_size: int, limit: int | None = None
                 ) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """``(indices, batch)`` over the first ``limit`` samples in order, at ``side``."""
    n = len(source) if limit is None else min(limit, len(source))
    for start in range(0, n, batch_size):
        indices = list(range(start, min(n, start + batch_size)))
        yield indices, make_batch([source.sample(i, side) for i in indices])


def world_source(world_seed: int, split: str, size: int, label_by: str = "shape") -> WorldBoxes:
    return WorldBoxes(World(WorldConfig(seed=world_seed)), split, size, label_by)


def build_source(dataset: str, split: str, *, data_root: str | Path | None, world_seed: int, size: int,
                 label_by: str = "shape") -> DetectionSource:
    """The named set's ``split`` ('train' or 'test'): world, coco (needs ``data_root``) or merged."""
    if dataset == "world":
        return world_source(world_seed, "train" if split == "train" else "test", size, label_by)
    if data_root is None:
        raise FileNotFoundError(f"dataset {dataset!r} needs data_root (a folder holding coco/); none was found")
    if dataset == "coco":
        return CocoBoxes(data_root, "train2017" if split == "train" else "val2017")
    if dataset == "merged":
        from .merged import merged_source

        return merged_source(split, data_root=data_root, world_seed=world_seed, size=size)
    raise ValueError(f"dataset: {dataset!r} is not one of 'world', 'coco', 'merged'")
