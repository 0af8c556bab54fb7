"""Streamed mixing of sources for webdataset shards: split by rank and worker, shuffled, endless, resumable.

Every DataLoader worker of every rank is one *reader* (``reader = rank * workers + worker``). A reader draws the
source of each sample from the weights, then the source's next raw sample:

- a shard source deals its shards out to the readers (the shard order reshuffled each epoch, the same on every
  rank); with fewer shards than readers each reader reads every shard and keeps every ``readers``-th sample.
  ``resampled`` draws shards with replacement instead (open_clip's ``--dataset-resampled``: no epochs);
- a map-style source (world, pairs, image folder) deals each epoch's permutation of its indices out likewise.

Raw samples pass a shuffle buffer before they are decoded, so skipping is cheap: a resumed run has each reader
skip the raw samples it had consumed (saved with the checkpoint) without decoding them. The stream of a reader
is a pure function of (seed, sources, reader count), so the resume is exact when the worker and rank counts are
unchanged; without a saved position (or with other counts) each reader skips its share of the consumed samples,
and the run then repeats or skips at most about one shuffle buffer per reader.

Bad samples (corrupt image, undecodable, empty or missing caption) are counted per reason and skipped; in
strict mode the first raises :class:`~florence_lib.data.errors.DataError` naming the shard and sample key.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from ..distributed import rank, world_size
from .errors import BadSampleLog, decode_text, load_image
from .mixing import Part, shares
from .shards import IMAGE_FIELDS


def shuffled(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """A shuffle buffer of ``size`` items (0: pass-through): each output is a random pick of the buffer."""
    if size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        buffer[j], item = item, buffer[j]
        yield item
    rng.shuffle(buffer)
    yield from buffer


class MixedStream(torch.utils.data.IterableDataset):
    """Endless decoded samples ``{"image", "text", "label", "source"}`` mixed from ``parts`` (see module doc).

    ``skip``: raw samples each reader consumed before (reader -> count), or one count for every reader."""

    def __init__(self, parts: Sequence[Part], transform: Callable, seed: int, shuffle_buffer: int = 1000,
                 strict: bool = False, skip: dict[int, int] | int = 0) -> None:
        self.parts = [p for p in parts if p.cfg.weight > 0]
        self.probs = np.asarray(shares(self.parts))
        self.transform, self.seed, self.buffer, self.strict, self.skip = transform, seed, shuffle_buffer, strict, skip

    # ------------------------------------------------------------------------------------------- raw streams
    def _epochs(self, part: Part, reader: int, readers: int, epochs: int | None = None) -> Iterator[Any]:
        """``(part, raw sample or index)`` of this reader, epoch after epoch (``epochs``: stop after that many)."""
        epoch = 0
        while epochs is None or epoch < epochs:
            order = np.random.default_rng([self.seed, part.index, epoch])
            count = 0
            if not part.streamed:
                yield from ((part, int(i)) for i in order.permutation(part.size)[reader::readers])
                count = 1
            elif part.cfg.resampled:
                pick = np.random.default_rng([self.seed, part.index, reader])
                while True:
                    yield from ((part, raw) for raw in self._tar([part.urls[int(pick.integers(len(part.urls)))]]))
            else:
                urls = [part.urls[i] for i in order.permutation(len(part.urls))]
                mine = urls[reader::readers] if len(urls) >= readers else urls
                for k, raw in enumerate(self._tar(mine)):
                    if len(urls) >= readers or k % readers == reader:
                        count += 1
                        yield part, raw
            if count == 0:
                raise RuntimeError(f"data.sources[{part.index}]: no readable samples for reader {reader}")
            epoch += 1

    def _tar(self, urls: list[str]) -> Iterator[dict[str, Any]]:
        def unreadable(exc: Exception) -> bool:
            self.log.bad("unreadable_shard", str(exc.args[-1] if exc.args else ""), detail=type(exc).__name__)
            return True

        yield from wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(handler=unreadable))

    # ------------------------------------------------------------------------------------------- decoding
    def _decode_raw(self, part: Part, raw: dict[str, Any]) -> dict[str, Any] | None:
        where = f"{Path(raw.get('__url__', '?')).name} key {raw.get('__key__')}"
        ext = next((e for e in IMAGE_FIELDS if e in raw), None)
        if ext is None:
            self.log.bad("missing_image", where)
            return None
        if "txt" not in raw:
            self.log.bad("missing_caption", where)
            return None
        caption = decode_text(raw["txt"], self.log, where)
        image = load_image(io.BytesIO(raw[ext]), self.log, where) if caption is not None else None
        if image is None:
            return None
        try:
            label = part.label(int(raw["cls"])) if "cls" in raw and part.num_labels else None
        except ValueError:
            label = None
        if label is None:
            label = part.caption_label(caption)
        return {"image": self.transform(image), "text": caption, "label": label}

    def _decode(self, item: Any, sample_seed: int) -> dict[str, Any] | None:
        part, payload = item
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed)  # torch.manual_seed formats stack traces: 6 ms
            if part.streamed:
                sample = self._decode_raw(part, payload)
            else:
                sample = dict(part.dataset[payload])
                if "bad" in sample:
                    self.log.bad(sample["bad"], sample.get("where", part.name))
                    return None
                sample["label"] = part.label(int(sample["label"]))
        if sample is not None:
            sample["source"] = part.index
        return sample

    # ------------------------------------------------------------------------------------------- the stream
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        reader, readers = rank() * workers + worker, world_size() * workers
        self.log = BadSampleLog(self.strict, name=f"data reader {reader}")
        rng = np.random.default_rng([self.seed, reader, 7])
        streams = [shuffled(self._epochs(p, reader, readers), self.buffer, np.random.default_rng(
            [self.seed, p.index, reader, 11])) for p in self.parts]
        skip = self.skip.get(reader, 0) if isinstance(self.skip, dict) else self.skip
        position, reported = 0, Counter()
        while True:
            which = int(rng.choice(len(streams), p=self.probs)) if len(streams) > 1 else 0
            item = next(streams[which])
            position += 1
            if position <= skip:
                continue
            sample = self._decode(item, self.seed * 1_000_003 + reader * 10_000_019 + position)
            if sample is None:
                continue
            sample["_bad"] = dict(self.log.counts - reported)
            reported = Counter(self.log.counts)
            sample["_consumer"], sample["_position"] = reader, position
            yield sample
