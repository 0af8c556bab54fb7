"""Image-text pairs listed in a CSV or TSV file (columns ``image``, ``caption``; paths relative to it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import BadSampleLog, decode_text, load_image, read_table


class ImageTextPairs(torch.utils.data.Dataset):
    """``(image, caption)`` pairs; rows with a missing image, an empty or non-UTF-8 caption, or the wrong
    number of fields are bad records (named by file and line)."""

    def __init__(
        self,
        table: str | Path,
        transform: Callable | None = None,
        image_column: str = "image",
        caption_column: str = "caption",
        delimiter: str | None = None,
        strict: bool = False,
        log: BadSampleLog | None = None,
    ):
        self.table, self.transform = Path(table), transform
        self.log = log if log is not None else BadSampleLog(strict, name=str(table), echo=True)
        self.samples: list[tuple[Path, str, int]] = []
        for line, row in read_table(self.table, (image_column, caption_column), self.log, delimiter):
            caption = decode_text(row[caption_column], self.log, self.table, line)
            if caption is None:
                continue
            path = self.table.parent / row[image_column]
            if not path.is_file():
                self.log.bad("missing_file", self.table, line, str(path))
                continue
            self.samples.append((path, caption, line))
        self.log.report()

    @property
    def captions(self) -> list[str]:
        return [caption for _, caption, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, str] | None:
        path, caption, line = self.samples[index]
        image = load_image(path, self.log, self.table, line)
        if image is None:
            return None
        return (self.transform(image) if self.transform else image), caption


class LabelledPairs(torch.utils.data.Dataset):
    """``{"image", "text", "label"}`` from a CSV/TSV of pairs; equal captions (exactly) share a UniCL label,
    numbered in order of first appearance. A row whose image fails to load gives ``{"bad": reason}``."""

    def __init__(self, table: str | Path, transform: Callable | None = None, image_column: str = "image",
                 caption_column: str = "caption", strict: bool = False) -> None:
        self.pairs = ImageTextPairs(table, None, image_column, caption_column, strict=strict)
        self.transform = transform
        ids: dict[str, int] = {}
        self.labels = [ids.setdefault(caption, len(ids)) for caption in self.pairs.captions]
        self.num_labels = len(ids)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, caption, line = self.pairs.samples[index]
        log = BadSampleLog(self.pairs.log.strict, name=str(self.pairs.table), max_examples=1)
        image = load_image(path, log, self.pairs.table, line)
        if image is None:
            return {"bad": next(iter(log.counts)), "where": f"{self.pairs.table} row {line}"}
        return {"image": self.transform(image) if self.transform else image, "text": caption,
                "label": self.labels[index]}
