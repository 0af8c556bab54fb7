"""Training data sources: ``data.sources`` entries ``{kind, path, weight, ...}`` and their one label space.

Kinds:
- ``world``: the embedded world (the default when no source is given);
- ``world_shapes``: the world's training scenes as image-label data labelled by the subject's *shape* alone
  (8 classes, prompts 'a photo of a circle.' from the world's templates; no text names a colour), with the strong
  colour-destroying augmentations of ``colour_free`` on this source's images only (``transforms.colour_free_ops``).
  It asks the contrastive objective for shape features that survive any colouring (the few-shot domains sketch,
  thermal and x-ray keep shape and lose colour; issue 10) while every colour caption of the other sources stays
  true. Like ``imagefolder`` it is image-label data, used in the phases with ``image_label_fraction`` > 0 unless
  ``phases`` names others. Assumption: its shape labels are classes of their own, so a 'red circle' image of the
  world source is a negative of the text 'a photo of a circle.' in a batch holding both (UniCL has no label
  hierarchy); its share is kept small for that reason;
- ``shards``: webdataset tars as ``curate`` writes them (``path``: a folder, a glob or a brace pattern); the
  UniCL label is the shard's ``cls`` field, i.e. curation's caption -> label table (``labels.json`` next to the
  ``shards/`` folder), so every image of a repeated caption shares a label;
- ``pairs``: a CSV/TSV with image and caption columns (image paths relative to the file); equal captions share
  a label;
- ``imagefolder``: ``<class>/<image>`` folders, an optional ``folder<TAB>name`` class-name file and prompt
  templates; the text is a class prompt and the label the class (the paper's stage-1 image-label data).

Mixing follows open_clip's ``--train-data`` with ``--train-data-upsampling-factors``: ``weight`` is an
upsampling factor, so source ``i`` makes up ``weight_i * size_i / sum_j weight_j * size_j`` of the samples (all
weights 1: every sample is seen equally often, as if the sources were concatenated).

Labels: each source's labels are shifted by the labels of the sources before it, so ids never collide across
sources; then labels that share a text across sources are merged (``mixing.merge_equal_texts``): UniCL's label
is the unique text, so 'a green square' in curated shards and in the world is one label, a positive, never a
negative of itself. Shards without a label table take a label hashed from the caption in a range of their own
above every counted label, unless another source declares the caption.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, field
from .shards import shard_urls

KINDS = ("world", "world_shapes", "shards", "pairs", "imagefolder")
IMAGE_LABEL_KINDS = ("world_shapes", "imagefolder")
"""Sources of image-label data (the paper's stage 1): used only in phases with image-label data by default."""
HASHED_LABELS = 1 << 40
"""Size of the label range of a shard source without a label table (caption hashes modulo this)."""
KIND_KEYS = {"shards": ("resampled", "labels"), "pairs": ("image_column", "caption_column"),
             "imagefolder": ("class_names", "templates"), "world_shapes": ("colour_free",)}


@dataclass
class SourceConfig:
    """One entry of ``data.sources``; kind-specific keys are refused on other kinds."""

    kind: Literal["world", "world_shapes", "shards", "pairs", "imagefolder"] = field("world", help="what the path holds")
    path: str | None = field(None, help="folder, glob, brace pattern (shards), CSV/TSV (pairs), root (imagefolder)")
    weight: float = field(1.0, min=0.0, help="upsampling factor: share = weight * size / sum(weight * size)")
    size: int | None = field(None, min=1, help="samples in the source; null: counted (shards: stats.json or tar; "
                                               "world_shapes: data.train_size)")
    resampled: bool = field(False, help="shards: draw shards with replacement (endless, no epochs)")
    labels: str | None = field(None, help="shards: curation's labels.json; null: looked for beside the shards")
    image_column: str = field("image", help="pairs: column of image paths")
    caption_column: str = field("caption", help="pairs: column of captions")
    class_names: str | None = field(None, help="imagefolder: file of 'folder<TAB>name' lines")
    templates: list[str] | None = field(None, help="imagefolder: prompt templates with '{}'; null: CLIP's seven")
    colour_free: float = field(1.0, min=0.0, max=1.0,
                               help="world_shapes: strength of the colour-destroying augmentations of its images "
                                    "(hue, channel order, grey, negative, solarize, posterize, blur; 0: none)")
    phases: list[str] | None = field(None, help="names of the phases that use this source; null: every phase "
                                                "(world_shapes, imagefolder: those with image-label data)")

    def validate(self) -> None:
        if self.kind in ("world", "world_shapes"):
            if self.path is not None:
                raise ConfigError(f"path: the {self.kind} source takes no path")
        elif not self.path:
            raise ConfigError(f"path: a {self.kind} source needs a path")
        defaults = SourceConfig()
        for kind, keys in KIND_KEYS.items():
            for key in keys:
                if kind != self.kind and getattr(self, key) != getattr(defaults, key):
                    raise ConfigError(f"{key}: only a {kind} source takes it (this one is {self.kind})")
        if self.templates is not None and not all("{}" in t for t in self.templates):
            raise ConfigError("templates: every template needs a '{}' for the class name")


def check_sources(sources: list[SourceConfig], key: str = "data.sources") -> None:
    """Refuse, naming ``key[i].path``, a source whose files are not there (run before any work starts)."""
    for i, s in enumerate(sources):
        where = f"{key}[{i}]"
        if s.kind in ("world", "world_shapes"):
            continue
        path = Path(s.path)
        if s.kind == "shards":
            try:
                urls = shard_urls(s.path)
            except FileNotFoundError:
                urls = []
            local = [u for u in urls if ":" not in u.split("/", 1)[0]]  # not pipe:/http:/s3: URLs
            missing = [u for u in local if not Path(u).is_file()]
            if not urls or (local and len(missing) == len(urls)):
                raise ConfigError(f"{where}.path: no shards match {s.path!r}")
            if missing:
                raise ConfigError(f"{where}.path: {len(missing)} of {len(urls)} shards are missing, "
                                  f"e.g. {missing[0]}")
            if s.labels is not None and not Path(s.labels).is_file():
                raise ConfigError(f"{where}.labels: {s.labels} not found")
        elif s.kind == "pairs" and not path.is_file():
            raise ConfigError(f"{where}.path: {s.path} is not a file")
        elif s.kind == "imagefolder":
            if not path.is_dir():
                raise ConfigError(f"{where}.path: {s.path} is not a folder")
            if s.class_names is not None and not Path(s.class_names).is_file():
                raise ConfigError(f"{where}.class_names: {s.class_names} not found")


# ----------------------------------------------------------------------------------------------- shards
def shard_label_table(source: SourceConfig, urls: list[str]) -> Path | None:
    """The curation label table of a shard source: ``labels``, else ``labels.json`` in or above the shards'
    folder (``curate`` writes ``<out>/shards/*.tar`` and ``<out>/labels.json``)."""
    if source.labels is not None:
        return Path(source.labels)
    folder = Path(urls[0]).parent
    for candidate in (folder / "labels.json", folder.parent / "labels.json"):
        if candidate.is_file():
            return candidate
    return None


def count_shard_samples(urls: list[str]) -> int:
    """Samples in the shards: ``curate``'s stats.json ``kept`` when beside them, else the tar members' keys."""
    folder = Path(urls[0]).parent
    stats = folder.parent / "stats.json"
    every = sorted(str(p) for p in folder.glob("shard-*.tar"))
    if stats.is_file() and sorted(urls) == every:
        kept = json.loads(stats.read_text(encoding="utf-8")).get("kept")
        if isinstance(kept, int) and kept > 0:
            return kept
    total = 0
    for url in urls:
        try:
            with tarfile.open(url) as tar:
                total += len({Path(m.name).name.split(".", 1)[0] for m in tar.getmembers() if m.isfile()})
        except (OSError, tarfile.TarError):
            continue  # the reader counts it as an unreadable shard
    return max(total, 1)


def caption_label(caption: str) -> int:
    """A stable label in ``[0, HASHED_LABELS)`` for a caption of a shard without a label table."""
    return int.from_bytes(hashlib.blake2b(caption.encode("utf-8"), digest_size=8).digest(), "big") % HASHED_LABELS


def exact_caption_labels(table: Path) -> tuple[dict[str, int], int]:
    """Caption text -> label of a curation ``labels.json`` (for samples without a ``cls`` field), and its size."""
    entries = json.loads(table.read_text(encoding="utf-8"))
    return {e["text"]: int(e["label"]) for e in entries if e.get("kind") == "caption"}, len(entries)


# ----------------------------------------------------------------------------------------------- defaults
def default_sources(run_dir: str | Path | None, profile: str | None = None, with_world: bool = False
                    ) -> list[dict[str, Any]]:
    """The shards notebook 01 curated in ``run_dir`` (``01_data_curation/curated_<profile>/shards``; the newest
    when ``profile`` is None or has none), else the world: a value for ``data.sources``.

    ``with_world`` adds the world beside found shards (each sample seen equally often: weights 1). Notebook 01's
    quick set is ~2,000 pairs, a tenth of what the quick run needs: alone, the run would pass over it ~11 times.
    """
    base = Path(run_dir) / "01_data_curation" if run_dir is not None else None
    if base is None or not base.is_dir():
        return [{"kind": "world"}]
    found = [d / "shards" for d in base.iterdir() if any((d / "shards").glob("shard-*.tar"))]
    if not found:
        return [{"kind": "world"}]
    preferred = [d for d in found if profile is not None and d.parent.name == f"curated_{profile}"]
    chosen = preferred[0] if preferred else max(found, key=lambda d: d.stat().st_mtime)
    return [{"kind": "shards", "path": str(chosen)}, *([{"kind": "world"}] if with_world else [])]


def describe_sources(sources: list[SourceConfig]) -> str:
    """One line naming the data, e.g. ``shards runs/x/curated/shards (weight 1)``, for logs and notebooks."""
    return " + ".join(s.kind + (f" {s.path}" if s.path else "") + f" (weight {s.weight:g})" for s in sources)
