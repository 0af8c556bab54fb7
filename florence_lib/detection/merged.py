"""A FLOD-style merged detection set: several box sources in one label space, plus pseudo-boxes.

Florence's FLOD-9M merges COCO, LVIS, OpenImages and Objects365 and adds pseudo-boxes that a trained detector
draws on ImageNet-22K (self-training). Here, at the workplace's scale: the world's boxes (8 shapes) and the
shared COCO subset (80 categories) are mapped into the union of their category names (a name shared by two
sources is one category), and :class:`PseudoBoxes` labels image-only scenes with a trained detector's boxes
above ``score_threshold``. :func:`data_card` describes the result (sources, images, boxes per category).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .data import CocoBoxes, DetectionSource, Target, world_source


class MergedBoxes:
    """The concatenation of ``sources`` (name -> source), labels mapped into the union of category names."""

    def __init__(self, sources: dict[str, DetectionSource]) -> None:
        if not sources:
            raise ValueError("MergedBoxes needs at least one source")
        self.sources = sources
        self.categories: list[str] = list(dict.fromkeys(c for s in sources.values() for c in s.categories))
        index = {c: i for i, c in enumerate(self.categories)}
        self._maps = {n: torch.tensor([index[c] for c in s.categories]) for n, s in sources.items()}
        self._spans: list[tuple[str, int]] = []
        for name, source in sources.items():
            self._spans.append((name, len(source)))

    def __len__(self) -> int:
        return sum(n for _, n in self._spans)

    def locate(self, index: int) -> tuple[str, int]:
        """(source name, index within it) of merged sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a merged set of {len(self)}")
        for name, n in self._spans:
            if index < n:
                return name, index
            index -= n
        raise AssertionError("unreachable")

    def sample(self, index: int, side: int) -> tuple[torch.Tensor, Target]:
        name, i = self.locate(index)
        image, target = self.sources[name].sample(i, side)
        return image, {**target, "labels": self._maps[name][target["labels"]]}


class PseudoBoxes:
    """Image-only samples of ``images`` labelled by ``detector``'s detections above ``score_threshold``
    (computed once per (index, side) and cached)."""

    def __init__(self, images: DetectionSource, detector: torch.nn.Module, categories: Sequence[str],
                 score_threshold: float = 0.3) -> None:
        self.images, self.detector, self.categories = images, detector, list(categories)
        self.score_threshold = score_threshold
        self._cache: dict[tuple[int, int], Target] = {}

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def sample(self, index: int, side: int) -> tuple[torch.Tensor, Target]:
        from .data import make_batch
        from .postprocess import postprocess

        image, _ = self.images.sample(index, side)  # its own boxes are ignored: only pixels are "known"
        if (index, side) not in self._cache:
            self.detector.eval()
            batch = make_batch([(image, {})])
            det = postprocess(self.detector(batch["images"]), batch["image_sizes"])[0]
            keep = det["scores"] >= self.score_threshold
            self._cache[(index, side)] = {"boxes": det["boxes"][keep], "labels": det["labels"][keep]}
        return image, self._cache[(index, side)]


def merged_source(split: str, *, data_root: str | Path | None, world_seed: int, size: int) -> MergedBoxes:
    """World boxes + (when ``data_root`` holds coco/) the COCO subset, in one label space."""
    sources: dict[str, DetectionSource] = {
        "world": world_source(world_seed, "train" if split == "train" else "test", size)}
    if data_root is not None and (Path(data_root) / "coco").is_dir():
        sources["coco"] = CocoBoxes(data_root, "train2017" if split == "train" else "val2017")
    return MergedBoxes(sources)


def data_card(merged: MergedBoxes, side: int, title: str = "Merged detection set") -> dict[str, Any]:
    """Counts of the merged set (per source: images, boxes; per category: boxes) and its markdown card."""
    per_source: dict[str, dict[str, int]] = {}
    per_category: Counter[str] = Counter()
    for index in range(len(merged)):
        name, _ = merged.locate(index)
        _, target = merged.sample(index, side)
        entry = per_source.setdefault(name, {"images": 0, "boxes": 0})
        entry["images"] += 1
        entry["boxes"] += len(target["labels"])
        per_category.update(merged.categories[int(c)] for c in target["labels"])
    lines = [f"# {title}", "", "| source | images | boxes |", "|---|---|---|"]
    lines += [f"| {n} | {e['images']} | {e['boxes']} |" for n, e in per_source.items()]
    lines += ["", f"{len(merged.categories)} categories (union of the sources' names); boxes per category:", ""]
    lines += [f"- {c}: {k}" for c, k in per_category.most_common()]
    return {"sources": per_source, "categories": dict(per_category), "markdown": "\n".join(lines) + "\n"}
