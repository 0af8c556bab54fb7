"""Opened sources in one label space, mixed by weight: map-style (exact resume) or streamed (see ``stream``).

:func:`open_sources` turns ``SourceConfig`` entries into :class:`Part` objects with their label offsets, and
merges the labels of equal texts across sources (:func:`merge_equal_texts`);
:class:`MixedPairs` mixes map-style parts into one indexable dataset (so ``batches.StepSampler`` resumes it
exactly); :class:`MixCollate` batches samples of either kind, dropping bad ones and counting them per reason;
:class:`DataTracker` strips that bookkeeping from each batch before training sees it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .imagefolder import ImageFolderPairs
from .pairs import LabelledPairs
from .shards import shard_urls
from .sources import (
    HASHED_LABELS,
    SourceConfig,
    caption_label,
    count_shard_samples,
    exact_caption_labels,
    shard_label_table,
)


@dataclass
class Part:
    """An opened source: its size, its label range ``[offset, offset + num_labels)`` and how to read it.

    Shard parts also own ``hash_offset``: the start of their hashed-caption label range. ``merged`` (shared by all
    parts) maps a label to the one it was merged into; ``known`` (shared) maps every text a source declares to its
    label, for shard captions outside their own table."""

    index: int
    cfg: SourceConfig
    size: int
    num_labels: int
    offset: int = 0
    dataset: Any = None  # map-style: dataset[i] -> {"image", "text", "label"} or {"bad": reason}
    urls: list[str] = field(default_factory=list)
    captions: dict[str, int] = field(default_factory=dict)
    hash_offset: int = 0
    merged: dict[int, int] = field(default_factory=dict)
    known: dict[str, int] = field(default_factory=dict)

    def label(self, local: int) -> int:
        """The global label of this source's label ``local``."""
        label = self.offset + local
        return self.merged.get(label, label)

    def caption_label(self, caption: str) -> int:
        """The global label of a shard caption: its table's, else any source's for the same text, else hashed."""
        local = self.captions.get(caption)
        if local is not None:
            return self.label(local)
        label = self.known.get(caption)
        if label is not None:
            return self.merged.get(label, label)
        return self.hash_offset + caption_label(caption)

    @property
    def name(self) -> str:
        return f"{self.index}_{self.cfg.kind}"

    @property
    def streamed(self) -> bool:
        return self.cfg.kind == "shards"


def open_sources(sources: Sequence[SourceConfig], transform: Callable, world: Callable[[], Any],
                 strict: bool = False, world_shapes: Callable[[SourceConfig], Any] | None = None) -> list[Part]:
    """Open every source (``world()`` builds the world's pairs, ``world_shapes(source)`` a world_shapes source's
    shape-labelled pairs with that source's own transform) and lay their labels end to end."""
    parts = []
    for i, s in enumerate(sources):
        if s.kind == "world":
            ds = world()
            part = Part(i, s, len(ds), ds.num_labels, dataset=ds)
        elif s.kind == "world_shapes":
            if world_shapes is None:
                raise ValueError(f"data.sources[{i}]: a world_shapes source needs a world_shapes builder")
            ds = world_shapes(s)
            part = Part(i, s, len(ds), ds.num_labels, dataset=ds)
        elif s.kind == "pairs":
            ds = LabelledPairs(s.path, transform, s.image_column, s.caption_column, strict=strict)
            part = Part(i, s, len(ds), ds.num_labels, dataset=ds)
        elif s.kind == "imagefolder":
            ds = ImageFolderPairs(s.path, transform, s.class_names, s.templates)
            part = Part(i, s, len(ds), ds.num_labels, dataset=ds)
        else:
            urls = shard_urls(s.path)
            table = shard_label_table(s, urls)
            captions, n = exact_caption_labels(table) if table is not None else ({}, 0)
            alone = len(sources) == 1  # its size sets no share: skip counting (90k shards on a cluster)
            size = s.size or (1 if alone else count_shard_samples(urls))
            part = Part(i, s, size, n, urls=urls, captions=captions)
        if s.size is not None:
            part.size = s.size
        parts.append(part)
    offset = 0
    for part in parts:
        part.offset, offset = offset, offset + part.num_labels
    for part in parts:
        if part.streamed:
            part.hash_offset, offset = offset, offset + HASHED_LABELS
    if len(parts) > 1:
        merge_equal_texts(parts)
    return parts


def declared_texts(part: Part) -> Iterator[tuple[str, int]]:
    """(text, local label) of every text a source declares up front: the world's captions and class prompts, a
    CSV's captions, an image folder's prompts of each class, a curation label table's captions."""
    ds = part.dataset
    if part.streamed:
        yield from part.captions.items()
    elif isinstance(ds, ImageFolderPairs):
        yield from ((t.format(name), c) for c, name in enumerate(ds.classes) for t in ds.templates)
    elif isinstance(ds, LabelledPairs):
        yield from zip(ds.pairs.captions, ds.labels)
    elif hasattr(ds, "texts"):  # the world's pairs
        yield from getattr(ds, "class_texts", {}).items()
        yield from zip(ds.texts, ds.labels)


def merge_equal_texts(parts: Sequence[Part]) -> None:
    """One label per text across sources: labels of sources that share a text are merged (union-find, into the
    smallest), so 'a green square' from curated shards and from the world are positives of each other rather
    than each other's negatives (UniCL's label is the unique text, paper §2.2). Transitive: a source's two texts
    with one label (an image folder's prompts of a class) carry the merge along."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    known: dict[str, int] = {}
    for part in parts:
        for text, local in declared_texts(part):
            label = part.offset + int(local)
            first = known.setdefault(text, label)
            a, b = root(first), root(label)
            if a != b:
                parent[max(a, b)] = min(a, b)
    merged = {x: root(x) for x in parent if root(x) != x}
    for part in parts:
        part.merged, part.known = merged, known


def shares(parts: Sequence[Part]) -> list[float]:
    """Expected fraction of samples from each part: ``weight * size``, normalised (open_clip's upsampling)."""
    mass = [p.cfg.weight * p.size for p in parts]
    total = sum(mass)
    if total <= 0:
        raise ValueError("data.sources: every weight is 0; nothing to train on")
    return [m / total for m in mass]


class MixedPairs(torch.utils.data.Dataset):
    """Map-style parts as one dataset of ``sum(round(weight * size))`` virtual items: part ``i`` owns a block
    of ``round(weight_i * size_i)`` of them and item ``j`` of the block is its sample ``j mod size_i`` (weight 2
    lists each sample twice; weight 0.5 keeps a fixed half). The step sampler shuffles the virtual items."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts = [p for p in parts if p.cfg.weight > 0]
        self.blocks = [max(1, round(p.cfg.weight * p.size)) for p in self.parts]
        self.starts = [sum(self.blocks[:i]) for i in range(len(self.blocks))]

    def __len__(self) -> int:
        return sum(self.blocks)

    def locate(self, index: int) -> tuple[Part, int]:
        for part, start, block in zip(self.parts, self.starts, self.blocks):
            if index < start + block:
                return part, (index - start) % part.size
        raise IndexError(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        part, local = self.locate(index)
        sample = dict(part.dataset[local])
        sample["source"] = part.index
        if "label" in sample:
            sample["label"] = part.label(int(sample["label"]))
        return sample


class MixCollate:
    """Batch the good samples with ``collate`` (e.g. ``PairCollate``) and add ``"data"``: the bad samples per
    reason, the samples per source and, for a streamed batch, its reader (``consumer``) and stream position."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collate = collate

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        bad: Counter[str] = Counter()
        for s in samples:
            bad.update(s.get("_bad", {}))
            if "bad" in s:
                bad[s["bad"]] += 1
        good = [s for s in samples if "bad" not in s]
        info = {"bad": dict(bad), "sources": dict(Counter(int(s["source"]) for s in good)),
                "consumer": samples[-1].get("_consumer"), "position": samples[-1].get("_position")}
        batch = self.collate(good) if len(good) >= 2 else {}
        batch["data"] = info
        return batch


class DataTracker:
    """Strips ``"data"`` from each batch, keeping the counts (bad samples per reason, samples per source) and the
    stream position of each reader: what the run logs to metrics.jsonl and saves for a streamed resume."""

    def __init__(self, parts: Sequence[Part], positions: dict[int, int] | None = None) -> None:
        self.names = {p.index: p.name for p in parts}
        self.bad: Counter[str] = Counter()
        self.sources: Counter[int] = Counter()
        self.positions: dict[int, int] = dict(positions or {})

    def wrap(self, batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for batch in batches:
            info = batch.pop("data")
            self.bad.update(info["bad"])
            self.sources.update(info["sources"])
            if info["consumer"] is not None:
                self.positions[int(info["consumer"])] = int(info["position"])
            if "image" in batch:  # a batch with fewer than two good samples is dropped
                yield batch

    def record(self) -> dict[str, Any]:
        """Flat counts: ``skipped``, ``skipped_<reason>``, ``samples_<index>_<kind>``."""
        out: dict[str, Any] = {"skipped": sum(self.bad.values())}
        out.update({f"skipped_{k}": v for k, v in sorted(self.bad.items())})
        out.update({f"samples_{self.names[i]}": self.sources.get(i, 0) for i in sorted(self.names)})
        return out
