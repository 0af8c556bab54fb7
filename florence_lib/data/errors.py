"""Bad input: one mechanism shared by every loader, the shard reader and the curation pipeline.

A bad record (missing file, truncated image, empty or non-UTF-8 caption, malformed row) is never turned into a
silently wrong sample. In ``strict`` mode it raises :class:`DataError` naming the file and row; by default it
is skipped, counted under a short reason, and the counts are reported once the pass over the data ends.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger("florence_lib.data")


class DataError(ValueError):
    """A bad record, e.g. ``DataError("captions.csv row 17: empty caption")``."""


def where(source: str | Path, row: int | str | None = None) -> str:
    """``"captions.csv row 17"`` for a row number, ``"captions.json image_id=9"`` for another locator."""
    if row is None:
        return str(source)
    return f"{source} row {row}" if isinstance(row, int) else f"{source} {row}"


class BadSampleLog:
    """Raise (strict) or skip-and-count (default) bad records; ``summary()`` says what was skipped and why.

    Pass one log through a whole pipeline so that the final report covers every stage. ``echo`` also warns on
    each record as it is met: map-style datasets use it, since their passes have no end at which to report.
    """

    def __init__(self, strict: bool = False, name: str = "data", max_examples: int = 3, echo: bool = False):
        self.strict = strict
        self.echo = echo
        self.name = name
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def bad(self, reason: str, source: str | Path, row: int | str | None = None, detail: str = "") -> None:
        """Record one bad record under ``reason`` (a short key such as ``"empty_caption"``)."""
        message = f"{where(source, row)}: {reason.replace('_', ' ')}" + (f" ({detail})" if detail else "")
        if self.strict:
            raise DataError(message)
        self.counts[reason] += 1
        if self.echo:
            logger.warning("skipped %s", message)
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(message)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "skipped": self.skipped,
            "reasons": dict(self.counts),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }

    def report(self) -> None:
        """One warning line with the per-reason counts (nothing when all records were good)."""
        if self.skipped:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            first = next(iter(self.examples.values()))[0]
            logger.warning(
                "%s: skipped %d bad record(s): %s; e.g. %s", self.name, self.skipped, reasons, first
            )

    def merge(self, other: BadSampleLog) -> None:
        """Add another log's counts (e.g. one per DataLoader worker) into this one."""
        self.counts.update(other.counts)
        for reason, examples in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(examples[: max(0, self.max_examples - len(mine))])


def load_image(
    path: str | Path | BinaryIO,
    log: BadSampleLog,
    source: str | Path | None = None,
    row: int | str | None = None,
    mode: str | None = "RGB",
) -> Image.Image | None:
    """Fully decode an image (so truncation shows here, not inside a DataLoader worker); None when bad.

    ``source``/``row`` name the record that pointed at the file (default: the file itself).
    """
    source = path if source is None else source
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode) if mode else img.copy()
    except FileNotFoundError:
        log.bad("missing_file", source, row, str(path))
    except UnidentifiedImageError:
        log.bad("unreadable_image", source, row, str(path))
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports truncation and corrupt chunks this way
        reason = "truncated_image" if "truncated" in str(exc).lower() else "unreadable_image"
        log.bad(reason, source, row, f"{path}: {exc}")
    return None


def decode_text(
    raw: bytes | str | None,
    log: BadSampleLog,
    source: str | Path,
    row: int | str | None = None,
    what: str = "caption",
) -> str | None:
    """UTF-8 decode and strip a text field; None (and a logged reason) if missing, non-UTF-8 or empty."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            log.bad("non_utf8", source, row, str(exc))
            return None
    text = (raw or "").strip()
    if not text:
        log.bad(f"empty_{what}", source, row)
        return None
    return text


def read_table(
    path: str | Path, columns: Sequence[str], log: BadSampleLog, delimiter: str | None = None
) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV (or TSV, by suffix) as ``(line number, {column: text})``, bad rows sent to ``log``.

    A missing column makes the whole file unusable and always raises; a row with too few or too many fields,
    or with bytes that are not UTF-8, is a bad record.
    """
    path = Path(path)
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                log.bad("malformed_row", path, reader.line_num, str(exc))
                continue
            if None in row or any(v is None for v in row.values()):
                log.bad("malformed_row", path, reader.line_num, f"expected {len(reader.fieldnames)} fields")
                continue
            try:
                "".join(row.values()).encode("utf-8")  # undecodable bytes came in as lone surrogates
            except UnicodeEncodeError:
                log.bad("non_utf8", path, reader.line_num)
                continue
            yield reader.line_num, row


def collate_skip_none(batch: list[Any]) -> Any:
    """``default_collate`` over the samples that loaded: map-style datasets return None for a bad one."""
    return torch.utils.data.default_collate([b for b in batch if b is not None])
