"""Image-label data as image-text pairs: ``<root>/<class>/<image>``, class prompts as the text (paper §2.2).

Florence's stage 1 turns image-label data into pairs by filling prompt templates with the class name; the UniCL
label is the class, so every image of a class is a positive of every prompt of it. An optional class-name file
holds ``folder<TAB>name`` lines (e.g. ``n01440764<TAB>tench``); folders it does not name keep their folder name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import BadSampleLog, DataError, load_image
from .prompts import IMAGE_TEMPLATES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def read_class_names(path: str | Path) -> dict[str, str]:
    """``folder -> name`` from ``folder<TAB>name`` lines; a line without a tab is a DataError naming it."""
    names = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        folder, sep, name = line.partition("\t")
        if not sep or not name.strip():
            raise DataError(f"{path} line {number}: expected 'folder<TAB>name', got {line!r}")
        names[folder.strip()] = name.strip()
    return names


class ImageFolderPairs(torch.utils.data.Dataset):
    """``{"image", "text", "label"}`` per image of ``root/<class>/``; the text is a prompt drawn with the torch
    RNG (seeded per sample by the step loader, so a resumed run draws the same prompt). A bad image gives
    ``{"bad": reason}``."""

    def __init__(self, root: str | Path, transform: Callable | None = None, class_names: str | Path | None = None,
                 templates: Sequence[str] | None = None) -> None:
        self.root, self.transform = Path(root), transform
        self.templates = list(templates or IMAGE_TEMPLATES)
        if not all("{}" in t for t in self.templates):
            raise DataError(f"{root}: every prompt template needs a '{{}}' for the class name")
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        names = read_class_names(class_names) if class_names else {}
        self.classes = [names.get(f, f.replace("_", " ")) for f in folders]
        self.samples: list[tuple[Path, int]] = [
            (f, label) for label, folder in enumerate(folders)
            for f in sorted((self.root / folder).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not self.samples:
            raise DataError(f"{root}: no images in <class>/<image> folders")

    @property
    def num_labels(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        log = BadSampleLog(name=str(self.root), max_examples=1)
        image = load_image(path, log)
        if image is None:
            return {"bad": next(iter(log.counts)), "where": str(path)}
        template = self.templates[int(torch.randint(len(self.templates), ()))]
        return {"image": self.transform(image) if self.transform else image,
                "text": template.format(self.classes[label]), "label": label}
