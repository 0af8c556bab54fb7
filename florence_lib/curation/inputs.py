"""Input pairs: a CSV of ``image,caption[,source]`` (image paths relative to the CSV) or webdataset shards.

Both are read as a stream of :class:`Pair` in a fixed order, so that a row number names the same pair on every
pass and in every run; CSV images are only read from disk when a stage asks for their bytes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds
from PIL import Image

from ..data.errors import DataError
from ..data.shards import IMAGE_FIELDS, shard_urls

REQUIRED_COLUMNS = ("image", "caption")


@dataclass(frozen=True)
class Pair:
    """One input row. ``caption`` is None when it could not be decoded (then ``problem`` says why)."""

    row: int
    image: str
    caption: str | None
    source: str
    path: Path | None = None  # CSV input: the image file
    data: bytes | None = None  # shard input: the encoded image
    problem: str | None = None
    reason: str = "unreadable"  # the drop reason when there is a problem ("bad_encoding": not UTF-8)

    def open(self) -> Path | io.BytesIO:
        """Something ``PIL.Image.open`` reads."""
        return self.path if self.path is not None else io.BytesIO(self.data or b"")

    def read_bytes(self) -> bytes:
        return self.path.read_bytes() if self.path is not None else (self.data or b"")


def is_csv(spec: str | Path) -> bool:
    return str(spec).lower().endswith(".csv")


def iter_pairs(spec: str | Path) -> Iterator[Pair]:
    """The pairs of a CSV file or of webdataset shards (a directory, glob or brace pattern), in order."""
    return _iter_csv(Path(spec)) if is_csv(spec) else _iter_shards(spec)


def _iter_csv(path: Path) -> Iterator[Pair]:
    if not path.is_file():
        raise DataError(f"{path}: input CSV not found")
    # surrogateescape: a byte that is not UTF-8 spoils its row only (found below), not the whole file
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        for row, rec in enumerate(reader):
            image = (rec.get("image") or "").strip()
            problem, reason = None, "unreadable"
            if None in rec or any(rec.get(c) is None for c in REQUIRED_COLUMNS):
                problem = "malformed CSV row"
            elif not _is_utf8(rec.values()):
                problem, reason = f"line {reader.line_num}: bytes that are not UTF-8", "bad_encoding"
                image = image.encode("utf-8", "backslashreplace").decode()
                rec = {**rec, "caption": None, "source": None}
            elif not image:
                problem = "empty image path"
            yield Pair(row=row, image=image, caption=rec.get("caption"), source=rec.get("source") or path.stem,
                       path=path.parent / image if image and not problem else None, problem=problem, reason=reason)


def _is_utf8(values: Iterable[str | None]) -> bool:
    try:
        "".join(v for v in values if isinstance(v, str)).encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes came in as lone surrogates
        return False
    return True


def _iter_shards(spec: str | Path) -> Iterator[Pair]:
    urls = shard_urls(spec)
    for row, raw in enumerate(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())):
        name = f"{Path(raw['__url__']).name}:{raw['__key__']}"
        ext = next((e for e in IMAGE_FIELDS if e in raw), None)
        caption, problem, reason = None, None, "unreadable"
        try:
            caption = raw["txt"].decode("utf-8") if "txt" in raw else ""
        except UnicodeDecodeError:
            problem, reason = "caption is not UTF-8", "bad_encoding"
        if ext is None:
            problem = "no image field"
        source = Path(raw["__url__"]).stem
        if "json" in raw:
            try:
                meta = json.loads(raw["json"])
                source = meta.get("source", source) if isinstance(meta, dict) else source
            except ValueError:
                problem = problem or "malformed json field"
        reason = "unreadable" if ext is None else reason
        yield Pair(row=row, image=name, caption=caption, source=source,
                   data=raw[ext] if ext else None, problem=problem, reason=reason)



def read_images(spec: str | Path, rows: Iterable[int]) -> dict[int, Image.Image]:
    """The decoded images of ``rows`` (one pass over the input; unreadable ones are left out)."""
    wanted, out = set(rows), {}
    for pair in iter_pairs(spec):
        if not wanted:
            break
        if pair.row in wanted:
            wanted.discard(pair.row)
            try:
                with Image.open(pair.open()) as img:
                    out[pair.row] = img.convert("RGB")
            except (OSError, ValueError, SyntaxError):
                pass
    return out
