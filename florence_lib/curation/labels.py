"""The text hash table (paper §2.2): every unique description becomes a label, giving UniCL triplets.

Pairs whose captions normalise to the same key share a label and become positives of one another in the UniCL
loss. Image-label datasets merge in with fresh label ids (namespaced by dataset, so a class can never collide
with a caption's label) and prompt templates that turn a class name into text.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .filters import caption_key

DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a close-up photo of a {}.",
                     "a rendering of a {}.", "a photo of the {}.")


@dataclass
class Label:
    label: int
    text: str  # the first caption seen with this key, or the class name
    kind: str  # "caption", or the image-label dataset the class comes from
    count: int = 0


class LabelTable:
    """Caption keys and dataset classes -> label ids, assigned in order of first appearance."""

    def __init__(self) -> None:
        self.labels: list[Label] = []
        self._ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def add_caption(self, caption: str, key: str | None = None) -> int:
        """The label of ``caption`` (or of ``key``, e.g. its near-identical group's key), created on first
        sight; counts one more pair."""
        key = caption_key(caption) if key is None else key
        label = self._ids.get(key)
        if label is None:
            label = self._new(key, caption, "caption")
        self.labels[label].count += 1
        return label

    def add_classes(self, dataset: str, class_names: Sequence[str]) -> list[int]:
        """Fresh labels for an image-label dataset's classes, after every existing id (never colliding)."""
        keys = [f"{dataset}::{name}" for name in class_names]
        return [self._ids[k] if k in self._ids else self._new(k, name, dataset) for k, name in zip(keys, class_names)]

    def _new(self, key: str, text: str, kind: str) -> int:
        label = len(self.labels)
        self._ids[key] = label
        self.labels.append(Label(label, text, kind))
        return label

    def prompt(self, label: int, rng: np.random.Generator, templates: Sequence[str] = DEFAULT_TEMPLATES) -> str:
        """The text of a triplet: a caption label's caption, or a class name in a randomly drawn template."""
        entry = self.labels[label]
        return entry.text if entry.kind == "caption" else templates[rng.integers(len(templates))].format(entry.text)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps([asdict(x) for x in self.labels], ensure_ascii=False, indent=0), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelTable:
        table = cls()
        for entry in json.loads(Path(path).read_text(encoding="utf-8")):
            label = Label(**entry)
            table.labels.append(label)
            table._ids[caption_key(label.text) if label.kind == "caption" else f"{label.kind}::{label.text}"] = \
                label.label
        return table


def sharing_stats(labels: Sequence[int]) -> dict[str, Any]:
    """How many pairs share their caption with another image (the paper: 350M of 900M)."""
    counts = Counter(labels)
    shared = sum(c for c in counts.values() if c > 1)
    return {"pairs": len(labels), "labels": len(counts), "pairs_sharing_caption": shared,
            "labels_shared": sum(1 for c in counts.values() if c > 1),
            "largest_label": max(counts.values(), default=0)}
