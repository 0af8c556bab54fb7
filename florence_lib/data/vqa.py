"""VQAv2-style question answering: a JSON list of {question_id, image_id, image, question, answer}."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import BadSampleLog, DataError, decode_text, load_image

FIELDS = {"question_id": int, "image_id": int, "image": str, "question": str, "answer": str}


class VQADataset(torch.utils.data.Dataset):
    """Question/answer records whose ``image`` paths are relative to ``image_root`` (default: the JSON's).

    ``__getitem__`` gives a dict: the record's fields and the decoded (or transformed) image, ``pixels``.
    A record with a missing or mistyped field, an empty question or answer, or no image file is a bad record.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_root: str | Path | None = None,
        transform: Callable | None = None,
        strict: bool = False,
        log: BadSampleLog | None = None,
    ):
        self.ann_file, self.transform = Path(ann_file), transform
        self.image_root = Path(image_root) if image_root is not None else self.ann_file.parent
        self.log = log if log is not None else BadSampleLog(strict, name=str(ann_file), echo=True)
        try:
            records = json.loads(self.ann_file.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{ann_file}: not valid JSON ({exc})") from exc
        if not isinstance(records, list):
            raise DataError(f"{ann_file}: expected a JSON list of records, got {type(records).__name__}")
        self.records = [r for i, r in enumerate(records) if self._valid(i, r)]
        self.log.report()

    def _valid(self, row: int, record: Any) -> bool:
        if not isinstance(record, dict):
            self.log.bad("malformed_row", self.ann_file, row, f"not an object: {record!r:.60}")
            return False
        wrong = [
            k
            for k, t in FIELDS.items()
            if not isinstance(record.get(k), t) or isinstance(record.get(k), bool)
        ]
        if wrong:
            self.log.bad("malformed_row", self.ann_file, row, f"missing or mistyped {', '.join(wrong)}")
            return False
        for key in ("question", "answer"):
            text = decode_text(record[key], self.log, self.ann_file, row, what=key)
            if text is None:
                return False
            record[key] = text
        if not (self.image_root / record["image"]).is_file():
            self.log.bad("missing_file", self.ann_file, row, str(self.image_root / record["image"]))
            return False
        record["row"] = row
        return True

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        record = self.records[index]
        image = load_image(self.image_root / record["image"], self.log, self.ann_file, record["row"])
        if image is None:
            return None
        return {**record, "pixels": self.transform(image) if self.transform else image}
