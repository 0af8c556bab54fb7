"""WebDataset shards: the on-disk format between curation and pretraining.

A sample is a mapping with ``key`` (str, no dots: webdataset splits file names at the first dot), ``image``
(PIL image or encoded JPEG/PNG bytes), and optionally ``caption`` (str), ``label`` (int), ``source`` (str),
``row`` (int) and ``meta`` (dict). They are stored as the webdataset fields ``jpg``/``png``, ``txt``, ``cls``
and ``json``, so any webdataset reader can open the shards.

Shards are written to a hidden temporary file and renamed when complete: a killed writer leaves at most a
``.shard-*.tar.tmp`` file behind, never a truncated ``shard-*.tar`` that a reader would take for a whole one.
"""

from __future__ import annotations

import glob
import io
import json
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from PIL import Image

from .errors import BadSampleLog, decode_text, load_image

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")
MAGIC = {b"\xff\xd8\xff": "jpg", b"\x89PNG": "png"}


def encode_sample(sample: Mapping[str, Any], image_format: str = "jpg", quality: int = 95) -> dict[str, Any]:
    """Turn a sample mapping into webdataset fields (bytes); ValueError naming the key when malformed."""
    key = sample.get("key")
    if not isinstance(key, str) or not key or "." in key or "/" in key:
        raise ValueError(f"sample key {key!r}: must be a non-empty str without '.' or '/'")
    image = sample.get("image")
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        fmt = "JPEG" if image_format == "jpg" else image_format.upper()
        image = image.convert("RGB") if fmt == "JPEG" and image.mode not in ("RGB", "L") else image
        image.save(buf, format=fmt, quality=quality)
        ext, data = image_format, buf.getvalue()
    elif isinstance(image, bytes | bytearray):
        ext = next((e for magic, e in MAGIC.items() if image.startswith(magic)), None)
        if ext is None:
            raise ValueError(f"sample {key}: image bytes are neither JPEG nor PNG")
        data = bytes(image)
    else:
        raise ValueError(
            f"sample {key}: image must be a PIL image or encoded bytes, got {type(image).__name__}"
        )
    fields: dict[str, Any] = {"__key__": key, ext: data}
    if sample.get("caption") is not None:
        fields["txt"] = str(sample["caption"]).encode("utf-8")
    if sample.get("label") is not None:
        fields["cls"] = str(int(sample["label"])).encode()
    extra = {k: sample[k] for k in ("source", "row", "meta") if sample.get(k) is not None}
    if extra:
        fields["json"] = json.dumps(extra, ensure_ascii=False).encode("utf-8")
    return fields


class ShardWriter:
    """Write samples into ``<out_dir>/<prefix>-000000.tar``, ... with at most ``max_count`` samples or about
    ``max_bytes`` bytes per shard. Use as a context manager; ``paths`` lists the completed shards.

    Shards are numbered from ``len(paths)``: to resume a killed run, put its completed shards in ``paths``.
    The writer does not look at other files in ``out_dir`` (:func:`write_shards` refuses existing shards).
    """

    def __init__(
        self,
        out_dir: str | Path,
        prefix: str = "shard",
        max_count: int = 10_000,
        max_bytes: int = 1 << 30,
        image_format: str = "jpg",
    ):
        if max_count < 1 or max_bytes < 1:
            raise ValueError(f"max_count and max_bytes must be >= 1, got {max_count}, {max_bytes}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.image_format = prefix, image_format
        self.max_count, self.max_bytes = max_count, max_bytes
        self.paths: list[Path] = []
        self.counts: list[int] = []
        self._tar: wds.TarWriter | None = None
        self._tmp: Path | None = None
        self._count = self._bytes = 0

    def write(self, sample: Mapping[str, Any]) -> None:
        fields = encode_sample(sample, self.image_format)
        size = sum(len(v) for k, v in fields.items() if k != "__key__")
        if self._tar is not None and (self._count >= self.max_count or self._bytes + size > self.max_bytes):
            self._finish()
        if self._tar is None:
            self._tmp = self.out_dir / f".{self.prefix}-{len(self.paths):06d}.tar.tmp"
            self._tar = wds.TarWriter(str(self._tmp), encoder=False)
        self._tar.write(fields)
        self._count += 1
        self._bytes += size

    def _finish(self) -> None:
        assert self._tar is not None and self._tmp is not None
        self._tar.close()
        final = self._tmp.with_name(self._tmp.name[1:].removesuffix(".tmp"))
        os.replace(self._tmp, final)
        self.paths.append(final)
        self.counts.append(self._count)
        self._tar, self._tmp, self._count, self._bytes = None, None, 0, 0

    def close(self) -> list[Path]:
        if self._tar is not None:
            self._finish()
        return self.paths

    def abort(self) -> None:
        """Drop the shard in progress (completed shards stay)."""
        if self._tar is not None:
            self._tar.close()
            self._tmp.unlink(missing_ok=True)
            self._tar, self._tmp = None, None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_shards(
    samples: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    max_count: int = 10_000,
    prefix: str = "shard",
    max_bytes: int = 1 << 30,
    image_format: str = "jpg",
    overwrite: bool = False,
) -> list[Path]:
    """Write ``samples`` as webdataset shards (see :class:`ShardWriter`); returns the shard paths in order.

    Existing ``<prefix>-*.tar`` files in ``out_dir`` are an error unless ``overwrite`` (which deletes them
    first): a smaller rerun would otherwise leave old shards behind, to be read along with the new ones.
    """
    stale = sorted(Path(out_dir).glob(f"{prefix}-*.tar"))
    if stale and not overwrite:
        raise FileExistsError(f"{out_dir}: {len(stale)} {prefix}-*.tar shard(s) exist; pass overwrite=True")
    for old in stale:
        old.unlink()
    with ShardWriter(out_dir, prefix, max_count, max_bytes, image_format) as writer:
        for sample in samples:
            writer.write(sample)
    return writer.paths


def shard_urls(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """A directory (its ``*.tar``), a glob, a brace pattern (``shard-{000000..000009}.tar``) or a list."""
    if isinstance(spec, str | Path):
        path = Path(spec)
        if path.is_dir():
            urls = sorted(str(p) for p in path.glob("*.tar"))
        elif glob.has_magic(str(spec)):
            urls = sorted(glob.glob(str(spec)))
        else:
            urls = wds.shardlists.expand_urls(str(spec))
    else:
        urls = [str(s) for s in spec]
    if not urls:
        raise FileNotFoundError(f"no shards match {spec}")
    return urls


class ShardDataset(torch.utils.data.IterableDataset):
    """Decoded samples from webdataset shards, split across DataLoader workers and distributed ranks.

    Yields dicts with ``key``, ``image`` (PIL, or ``transform(image)``) and whichever of ``caption``,
    ``label``, ``source``, ``row``, ``meta`` the sample has; with ``fields=("image", "label")`` it yields
    tuples instead and skips samples lacking one. ``shuffle`` > 0 shuffles shard order and a buffer of that
    many samples, from ``seed`` and the epoch set by :meth:`set_epoch`.
    """

    def __init__(
        self,
        urls: str | Path | Sequence[str | Path],
        transform: Callable | None = None,
        fields: Sequence[str] | None = None,
        shuffle: int = 0,
        seed: int = 0,
        strict: bool = False,
        log: BadSampleLog | None = None,
    ):
        self.urls = shard_urls(urls)
        self.transform, self.fields, self.shuffle, self.seed = transform, fields, shuffle, seed
        self.epoch, self._current = 0, "shard"
        self.log = log if log is not None else BadSampleLog(strict, name="shards")

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle order of the next pass (as DistributedSampler: call before each epoch)."""
        self.epoch = epoch

    def _track_shards(self, shards: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Remember the shard being read (for error messages) and flag local shards that lack tar's
        end-of-archive zero blocks: Python's tarfile takes a shard cut at a member boundary for a shorter,
        whole one. Their intact samples are still read."""
        for shard in shards:
            self._current = url = shard["url"]
            if os.path.isfile(url):
                with open(url, "rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(max(0, size - 1024))
                    if size % 512 or f.read() != bytes(1024):
                        self.log.bad("truncated_shard", url, detail=f"{size} bytes, no end-of-archive marker")
            yield shard

    def _on_error(self, exc: Exception) -> bool:
        self.log.bad(
            "unreadable_shard",
            self._current,
            detail=f"{type(exc).__name__}: {exc.args[0] if exc.args else ''}",
        )
        return True

    def _decode(self, raw: dict[str, Any]) -> dict[str, Any] | tuple | None:
        source = f"{Path(raw.get('__url__', self._current)).name} key {raw['__key__']}"
        ext = next((e for e in IMAGE_FIELDS if e in raw), None)
        if ext is None:
            self.log.bad("missing_image", source)
            return None
        image = load_image(io.BytesIO(raw[ext]), self.log, source)
        if image is None:
            return None
        out: dict[str, Any] = {"key": raw["__key__"], "image": image}
        if "txt" in raw:
            out["caption"] = decode_text(raw["txt"], self.log, source)
            if out["caption"] is None:
                return None
        try:
            if "cls" in raw:
                out["label"] = int(raw["cls"])
            if "json" in raw:
                extra = json.loads(raw["json"])
                out.update({k: extra[k] for k in ("source", "row", "meta") if k in extra})
        except (ValueError, TypeError, UnicodeDecodeError) as exc:  # TypeError: JSON that is not an object
            self.log.bad("malformed_fields", source, detail=str(exc))
            return None
        missing = [f for f in self.fields or () if f not in out]
        if missing:
            self.log.bad("missing_field", source, detail=", ".join(missing))
            return None
        if self.transform is not None:
            out["image"] = self.transform(image)
        return out if self.fields is None else tuple(out[f] for f in self.fields)

    def __iter__(self) -> Iterator[dict[str, Any] | tuple]:
        urls = list(self.urls)
        if self.shuffle:  # the same shard order on every rank, then split: ranks read disjoint shards
            random.Random(f"{self.seed}:{self.epoch}:shards").shuffle(urls)
        stages: list[Any] = [
            wds.SimpleShardList(urls),
            wds.split_by_node,
            wds.split_by_worker,
            self._track_shards,
            wds.tarfile_to_samples(handler=self._on_error),
        ]
        if self.shuffle:
            rng = random.Random(f"{self.seed}:{self.epoch}:samples")
            stages.append(wds.shuffle(self.shuffle, min(self.shuffle, 100), rng=rng))
        for raw in wds.DataPipeline(*stages):
            sample = self._decode(raw)
            if sample is not None:
                yield sample
        self.log.report()


read_shards = ShardDataset
"""Shorthand for :class:`ShardDataset`, an IterableDataset for ``torch.utils.data.DataLoader``."""
