"""The FLD-style curation pipeline (paper §2.1-2.2): a stream of pairs in, shards + manifest + data card out.

Stages, in the order a row meets them (a row is dropped by the first that rejects it; the manifest names it):

    1 decode/validate  unreadable, bad_encoding (a row or caption that is not UTF-8), too_small, aspect
    2 text             caption_length, boilerplate_text (describes nothing), language
    3 images           duplicate_image (first row of a near-duplicate cluster is kept)
    5 relevance        relevance (optional UniCL checkpoint or scorer)
    6 decontamination  contaminated (near-duplicate of an evaluation image)
    4+7 labels         identical (optionally near-identical) captions share a label; nothing is dropped
    8 sampling         sampling (caps per query and per source)

Resumable: the scan (stages 1-6, the expensive part) appends one record per row to ``.state/scan.jsonl`` after
each batch; a restarted run rebuilds the duplicate index from it and continues after the last complete record.
Labels and sampling are recomputed from the records (cheap, deterministic). Shards are renamed into place only
when complete, and each holds a fixed slice of the kept rows, so a restart skips the complete ones and
rewrites the rest: no sample is lost or written twice.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..config import ConfigError, to_dict
from ..data.errors import BadSampleLog, load_image
from ..data.shards import MAGIC, ShardWriter
from ..runs import RunDir
from .config import CurateConfig
from .data_card import write_data_card
from .dedup import (
    Deduplicator,
    HammingIndex,
    fine_descriptor,
    from_hex,
    hash_files,
    image_files,
    near_identical_groups,
    phash,
    to_hex,
)
from .filters import (
    caption_key,
    count_tokens,
    identify_language,
    image_reason,
    is_boilerplate,
    language_codes,
    language_reason,
    normalize_caption,
)
from .inputs import Pair, iter_pairs
from .labels import LabelTable, sharing_stats
from .relevance import Scorer, UniCLScorer
from .sampling import balance

REASONS = ("unreadable", "bad_encoding", "too_small", "aspect", "caption_length", "boilerplate_text", "language",
           "duplicate_image", "relevance", "contaminated", "sampling")
"""Drop reasons in pipeline order."""
INDEXED = (None, "relevance", "contaminated")
"""Reasons of rows that were registered as duplicate-cluster representatives during the scan."""
EXECUTION_KEYS = ("batch_size", "workers", "strict")
"""Config keys that change how a run executes, never its result (a resumed run may change them)."""


@dataclass
class Record:
    """What the scan learned about one input row (a line of the journal)."""

    row: int
    image: str
    source: str
    reason: str | None = None
    detail: str | None = None
    duplicate_of: int | str | None = None
    caption: str | None = None  # normalised
    tokens: int | None = None
    lang: str | None = None
    width: int | None = None
    height: int | None = None
    hash: str | None = None  # hex pHash of rows that passed stages 1-2
    fine: str | None = None  # hex of their fine descriptor (int8 thumbnail), the duplicate check's second look
    score: float | None = None  # relevance


@dataclass
class CurationResult:
    output: Path
    records: list[Record]
    labels: dict[int, int]  # row -> label of the kept rows
    table: LabelTable
    stats: dict[str, Any]

    @property
    def manifest(self) -> Path:
        return self.output / "manifest.jsonl"

    @property
    def shards(self) -> list[Path]:
        return sorted((self.output / "shards").glob("shard-*.tar"))


# ----------------------------------------------------------------------------------------------- stages 1-2
def inspect(pair: Pair, cfg: CurateConfig, keep_image: bool = False) -> tuple[Record, Image.Image | None]:
    """Stages 1-2 for one pair, plus its pHash when it passes: pure, so it can run in worker processes."""
    rec = Record(pair.row, pair.image, pair.source)
    if pair.problem:
        rec.reason, rec.detail = pair.reason, pair.problem
        return rec, None
    local = BadSampleLog(name="inspect", max_examples=1)
    image = load_image(pair.open(), local, pair.image, pair.row)
    if image is None:
        rec.reason, rec.detail = "unreadable", next(iter(local.examples.values()))[0]
        return rec, None
    rec.width, rec.height = image.size
    rec.reason = image_reason(image, cfg.min_side, cfg.max_aspect)
    if rec.reason:
        return rec, None
    rec.caption = normalize_caption(pair.caption or "")
    rec.tokens = count_tokens(rec.caption)
    if not cfg.min_tokens <= rec.tokens <= cfg.max_tokens:
        rec.reason = "caption_length"
    elif is_boilerplate(rec.caption):
        rec.reason = "boilerplate_text"
    elif cfg.languages:
        rec.lang, margin = identify_language(rec.caption, cfg.languages)
        rec.reason = language_reason(rec.lang, margin, cfg.languages, cfg.language_margin)
    if rec.reason:
        return rec, None
    rec.hash = to_hex(phash(image, cfg.hash_size))
    rec.fine = fine_descriptor(image).tobytes().hex() if cfg.fine_threshold is not None else None
    return rec, image if keep_image else None


# ----------------------------------------------------------------------------------------------- stages 3, 5, 6
def fines(records: Iterable[Record]) -> list[np.ndarray | None]:
    """The records' fine descriptors (None where a record has none, e.g. a journal of an older run)."""
    return [np.frombuffer(bytes.fromhex(r.fine), np.int8) if r.fine else None for r in records]


def filter_batch(batch: Sequence[tuple[Record, Image.Image | None]], dedup: Deduplicator, scorer: Scorer | None,
                 threshold: float, eval_index: HammingIndex | None, eval_names: Sequence[str]) -> None:
    """Near-duplicates, relevance and contamination for the rows of ``batch`` that passed stages 1-2."""
    alive = [(rec, img) for rec, img in batch if rec.reason is None]
    if not alive:
        return
    codes = from_hex((rec.hash for rec, _ in alive), dedup.index.nbytes)
    for (rec, _), dup in zip(alive, dedup.assign(codes, [rec.row for rec, _ in alive], fines(r for r, _ in alive))):
        if dup is not None:
            rec.reason, rec.duplicate_of = "duplicate_image", dup
    alive = [(rec, img) for rec, img in alive if rec.reason is None]
    if scorer is not None and alive:
        scores = np.asarray(scorer([img for _, img in alive], [rec.caption for rec, _ in alive]), dtype=float)
        for (rec, _), s in zip(alive, scores):
            rec.score = float(s)
            if s < threshold:
                rec.reason = "relevance"
    alive = [rec for rec, _ in alive if rec.reason is None]
    if eval_index is not None and alive:
        for rec, hit in zip(alive, eval_index.nearest(from_hex((rec.hash for rec in alive), eval_index.nbytes))):
            if hit is not None:
                rec.reason, rec.duplicate_of = "contaminated", eval_names[hit[0]]


# ----------------------------------------------------------------------------------------------- journal
class Journal:
    """Append-only JSONL of records; a torn last line (the run was killed mid-write) is cut off on load."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> list[Record]:
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
        records = [Record(**json.loads(line)) for line in data[:end].splitlines()]
        if [r.row for r in records] != list(range(len(records))):
            raise ValueError(f"{self.path}: journal rows are not 0..{len(records) - 1}; delete the output folder")
        return records

    def append(self, records: Iterable[Record]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n" for r in records))
            f.flush()


def _fingerprint(source: str | Path, cfg: CurateConfig, eval_images: Sequence[str | Path]) -> dict[str, Any]:
    path = Path(source)
    config = {k: v for k, v in to_dict(cfg).items() if k not in EXECUTION_KEYS}
    return {"input": str(path.resolve()), "input_bytes": path.stat().st_size if path.is_file() else None,
            "eval_images": [str(Path(p).resolve()) for p in eval_images], "config": config}


def _check_fingerprint(state: Path, fingerprint: dict[str, Any]) -> None:
    path = state / "fingerprint.json"
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise ConfigError(f"output: {state.parent} holds a run with a different {', '.join(changed)}; "
                              "rerun with the same command, or choose a new --output")
    else:
        path.write_text(json.dumps(fingerprint, indent=1), encoding="utf-8")


def _eval_index(state: Path, eval_images: Sequence[str | Path], radius: int,
                hash_size: int) -> tuple[HammingIndex | None, list[str]]:
    """pHashes of the evaluation images (cached in the state folder: hashing them again on resume is waste)."""
    if not eval_images:
        return None, []
    cache = state / "eval_hashes.json"
    if cache.is_file():
        names, hexes = zip(*json.loads(cache.read_text(encoding="utf-8"))) if cache.stat().st_size > 2 else ((), ())
    else:
        codes, files = hash_files(image_files(eval_images), hash_size)
        names, hexes = tuple(str(f) for f in files), tuple(to_hex(c) for c in codes)
        cache.write_text(json.dumps(list(zip(names, hexes))), encoding="utf-8")
    index = HammingIndex(radius, hash_size**2)
    index.add(from_hex(hexes, index.nbytes), range(len(hexes)))
    return index, list(names)


def _batched(items: Iterator[Any], n: int) -> Iterator[list[Any]]:
    while batch := list(itertools.islice(items, n)):
        yield batch


def scan(source: str | Path, state: Path, cfg: CurateConfig, eval_images: Sequence[str | Path] = (),
         scorer: Scorer | None = None, progress: bool = True) -> list[Record]:
    """Stages 1-6 over every row, resuming from the journal in ``state``; returns one record per row."""
    journal = Journal(state / "scan.jsonl")
    records = journal.load()
    if (state / "scan.done").is_file():
        return records
    if cfg.languages:
        unknown = [c for c in cfg.languages if c not in language_codes()]
        if unknown:
            raise ConfigError(f"languages: {unknown[0]!r} is not a langid language code")
    if scorer is None and cfg.relevance_checkpoint:
        scorer = UniCLScorer.from_checkpoint(cfg.relevance_checkpoint, cfg.relevance_image_size)
    dedup = Deduplicator(cfg.hash_radius, cfg.hash_size**2, cfg.fine_threshold)
    reps = [r for r in records if r.hash is not None and r.reason in INDEXED]
    dedup.add(from_hex((r.hash for r in reps), dedup.index.nbytes), [r.row for r in reps], fines(reps))
    eval_index, eval_names = _eval_index(state, eval_images, cfg.contamination_radius, cfg.hash_size)
    log = BadSampleLog(cfg.strict, name=str(source))
    pairs = itertools.islice(iter_pairs(source), len(records), None)
    work = partial(inspect, cfg=cfg, keep_image=scorer is not None)
    pool = multiprocessing.get_context("spawn").Pool(cfg.workers) if cfg.workers else None
    try:
        inspected = pool.imap(work, pairs, chunksize=16) if pool else map(work, pairs)
        bar = tqdm(desc="curate: scan", unit="row", initial=len(records), disable=not progress)
        for batch in _batched(iter(inspected), cfg.batch_size):
            for rec, _ in batch:
                if rec.reason in ("unreadable", "bad_encoding"):
                    log.bad(rec.reason, source, rec.row, rec.detail or "")
            filter_batch(batch, dedup, scorer, cfg.relevance_threshold, eval_index, eval_names)
            journal.append(rec for rec, _ in batch)
            records.extend(rec for rec, _ in batch)
            bar.update(len(batch))
        bar.close()
    finally:
        if pool is not None:
            pool.terminate()
    log.report()
    (state / "scan.done").touch()
    return records


# ----------------------------------------------------------------------------------------------- stages 4, 7, 8
def assign_labels(records: Sequence[Record], cfg: CurateConfig) -> tuple[dict[int, int], LabelTable, int | None]:
    """Sampling by query, then the label table over the rows that remain; marks sampled-out rows.

    Returns (row -> label of kept rows, the table, how many caption keys MinHash merged into another's label
    or None when merging is off).
    """
    alive = [r for r in records if r.reason is None]
    keys = [caption_key(r.caption or "") for r in alive]
    query = {k: k for k in keys}
    merged = None
    if cfg.merge_near_identical:
        unique = list(dict.fromkeys(keys))
        group = near_identical_groups(unique, cfg.minhash_threshold, cfg.minhash_num_perm)
        query = {k: unique[g] for k, g in zip(unique, group)}
        merged = int(sum(g != i for i, g in enumerate(group)))
    keep = balance([query[k] for k in keys], [r.source for r in alive], cfg.max_per_query, cfg.max_per_source,
                   cfg.seed)
    table = LabelTable()
    labels: dict[int, int] = {}
    for rec, key, k in zip(alive, keys, keep):
        if not k:
            rec.reason = "sampling"
            continue
        labels[rec.row] = table.add_caption(rec.caption or "", key=query[key])
    return labels, table, merged


# ----------------------------------------------------------------------------------------------- outputs
def _image_field(data: bytes) -> bytes | Image.Image:
    """Original bytes when they are JPEG/PNG (no re-encoding loss), else the decoded image (stored as JPEG)."""
    if any(data.startswith(m) for m in MAGIC):
        return data
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def write_shards(source: str | Path, shard_dir: Path, kept: Sequence[Record], labels: dict[int, int],
                 shard_size: int, progress: bool = True) -> list[Path]:
    """Write the kept rows (input order) into shards of ``shard_size``, skipping shards a killed run completed."""
    done = sorted(shard_dir.glob("shard-*.tar"))
    if [p.name for p in done] != [f"shard-{i:06d}.tar" for i in range(len(done))]:
        raise ValueError(f"{shard_dir}: shards are not numbered 0..{len(done) - 1}; delete the output folder")
    todo = {r.row: r for r in kept[len(done) * shard_size:]}
    writer = ShardWriter(shard_dir, max_count=shard_size, max_bytes=1 << 62)
    writer.paths.extend(done)  # continue the numbering after the completed shards
    with writer, tqdm(total=len(todo), desc="curate: shards", unit="sample", disable=not progress) as bar:
        for pair in iter_pairs(source):
            rec = todo.get(pair.row)
            if rec is None:
                continue
            writer.write({"key": f"{rec.row:09d}", "image": _image_field(pair.read_bytes()), "caption": rec.caption,
                          "label": labels[rec.row], "source": rec.source, "row": rec.row})
            bar.update()
    return writer.paths


def manifest_lines(records: Sequence[Record], labels: dict[int, int]) -> Iterator[str]:
    for r in records:
        yield json.dumps({"row": r.row, "image": r.image, "kept": r.reason is None, "reason": r.reason,
                          "duplicate_of": r.duplicate_of, "label": labels.get(r.row)}, ensure_ascii=False) + "\n"


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, path)


def summarize(records: Sequence[Record], labels: dict[int, int], merged: int | None) -> dict[str, Any]:
    """Counts per stage and drop reason, duplicate clusters, languages, sources and label sharing."""
    reasons = Counter(r.reason for r in records)
    remaining, funnel = len(records), []
    for reason in REASONS:
        remaining -= reasons.get(reason, 0)
        funnel.append({"stage": reason, "dropped": reasons.get(reason, 0), "remaining": remaining})
    clusters = Counter(r.duplicate_of for r in records if r.reason == "duplicate_image")
    return {
        "rows": len(records), "kept": reasons.get(None, 0),
        "dropped": {k: reasons.get(k, 0) for k in REASONS}, "funnel": funnel,
        "duplicate_clusters": len(clusters), "largest_cluster": 1 + max(clusters.values(), default=0),
        "near_identical_captions_merged": merged,
        "languages": dict(Counter(r.lang for r in records if r.lang).most_common()),
        "sources": dict(Counter(r.source for r in records if r.reason is None).most_common()),
        "labels": sharing_stats(list(labels.values())),
    }


def curate(source: str | Path, output: str | Path, cfg: CurateConfig | None = None,
           eval_images: Sequence[str | Path] = (), scorer: Scorer | None = None, card: bool = True,
           progress: bool = True) -> CurationResult:
    """Run (or resume) the whole pipeline; writes ``manifest.jsonl``, ``shards/``, ``labels.json``,
    ``stats.json`` and ``data_card.md`` under ``output``."""
    cfg = cfg or CurateConfig()
    out = RunDir(output)
    state = out.path / ".state"
    state.mkdir(exist_ok=True)
    _check_fingerprint(state, _fingerprint(source, cfg, eval_images))
    out.start(cfg, seed=cfg.seed, input=str(source))
    records = scan(source, state, cfg, eval_images, scorer, progress)
    labels, table, merged = assign_labels(records, cfg)
    kept = [r for r in records if r.reason is None]
    write_shards(source, out.path / "shards", kept, labels, cfg.shard_size, progress)
    _write_atomic(out.path / "manifest.jsonl", manifest_lines(records, labels))
    table.save(out.path / "labels.json")
    stats = summarize(records, labels, merged)
    out.save_json("stats.json", stats)
    result = CurationResult(out.path, list(records), labels, table, stats)
    if card:
        write_data_card(result, source)
    return result

