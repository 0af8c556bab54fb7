"""Dirt for clean pairs: the faults web data has, injected with known ground truth (tests and notebook 01).

Each dirty row copies a clean row (its ``origin``) and breaks one thing: an exact or near-duplicate image
(resized, JPEG re-encoded, cropped, colour-shifted), a caption that is not English, empty, over-long or
boilerplate, an image too small, too elongated or corrupt. Dirty rows are placed after their origin, so the
pipeline keeps the clean original and each row has one expected drop reason.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

EXPECTED_REASON = {
    "clean": None, "exact_duplicate": "duplicate_image", "resized": "duplicate_image", "jpeg": "duplicate_image",
    "crop": "duplicate_image", "colour_shift": "duplicate_image", "non_english": "language",
    "empty_caption": "caption_length", "long_caption": "caption_length", "boilerplate": "boilerplate_text",
    "corrupt": "unreadable", "too_small": "too_small", "aspect": "aspect",
}
NEAR_DUPLICATES = ("exact_duplicate", "resized", "jpeg", "crop", "colour_shift")
FOREIGN_CAPTIONS = (
    "un grand cercle rouge en haut à gauche sur un fond blanc",
    "ein kleines blaues Dreieck unten rechts auf einem grauen Hintergrund",
    "una estrella amarilla grande en el centro de la imagen",
    "um quadrado verde pequeno no canto superior esquerdo da imagem",
    "красный круг в левом верхнем углу на белом фоне",
    "白い背景の左上に赤い円がある",
    "en stor blå stjärna i mitten av bilden",
    "duży niebieski trójkąt w prawym dolnym rogu obrazu",
    "beyaz bir arka plan üzerinde büyük mavi bir yıldız",
    "白色背景上的一个红色的圆",
)
"""Non-English captions langid identifies with a wide margin (checked in tests/test_curation.py)."""
BOILERPLATE = ("IMG_0042.JPG", "untitled", "https://example.com/photos/8812.jpg", "image", "DSC_1034",
               "click here to buy now", "12345", "no description")


@dataclass
class DirtyPairs:
    """A written ``pairs.csv`` and, per row, the dirt kind and the row it was derived from."""

    csv: Path
    kinds: list[str]
    origin: list[int]

    def expected_reason(self, row: int) -> str | None:
        return EXPECTED_REASON[self.kinds[row]]


def _encode(image: Image.Image, fmt: str = "PNG", quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def _dirty_image(kind: str, image: Image.Image, rng: np.random.Generator) -> bytes:
    w, h = image.size
    if kind == "resized":
        s = rng.uniform(0.8, 1.5)
        return _encode(image.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC))
    if kind == "jpeg":
        return _encode(image, "JPEG", int(rng.integers(85, 96)))
    if kind == "crop":
        side = int(rng.integers(4))
        box = [(1, 0, w, h), (0, 1, w, h), (0, 0, w - 1, h), (0, 0, w, h - 1)][side]
        return _encode(image.crop(box))
    if kind == "colour_shift":
        shift = rng.integers(-6, 7, size=3)
        return _encode(Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + shift, 0, 255).astype(np.uint8)))
    if kind == "too_small":
        return _encode(image.resize((max(1, w // 8), max(1, h // 8))))
    if kind == "aspect":
        return _encode(image.resize((w * 4, max(1, h // 2))))
    data = _encode(image)
    if kind == "corrupt":
        return data[: len(data) // 2] if rng.random() < 0.5 else bytes(rng.integers(0, 256, 200, dtype=np.uint8))
    return data  # exact_duplicate and caption faults keep the image bytes


def _dirty_caption(kind: str, caption: str, rng: np.random.Generator, max_tokens: int) -> str:
    if kind == "non_english":
        return FOREIGN_CAPTIONS[rng.integers(len(FOREIGN_CAPTIONS))]
    if kind == "empty_caption":
        return "" if rng.random() < 0.5 else "   "
    if kind == "long_caption":
        words = caption.split() or ["shape"]
        return " ".join(words[i % len(words)] for i in range(max_tokens + 1 + int(rng.integers(40))))
    if kind == "boilerplate":
        return BOILERPLATE[rng.integers(len(BOILERPLATE))]
    return caption


def write_dirty_pairs(out_dir: str | Path, images: Sequence[np.ndarray], captions: Sequence[str],
                      counts: Mapping[str, int], seed: int = 0, max_tokens: int = 77,
                      source: str = "world") -> DirtyPairs:
    """Write ``out_dir/pairs.csv`` and ``out_dir/images/``: the clean pairs plus ``counts[kind]`` dirty rows
    of each kind (origins drawn at random), each placed at a random position after its origin."""
    unknown = [k for k in counts if k not in EXPECTED_REASON or k == "clean"]
    if unknown:
        raise ValueError(f"counts: unknown dirt kind {unknown[0]!r}; known: {', '.join(list(EXPECTED_REASON)[1:])}")
    rng = np.random.default_rng(seed)
    n = len(images)
    items = [(float(i), "clean", i) for i in range(n)]
    for kind, k in counts.items():
        for origin in rng.integers(0, n, size=k):
            items.append((rng.uniform(origin + 0.5, n), kind, int(origin)))
    items.sort(key=lambda t: t[0])
    position = {i: row for row, (_, kind, i) in enumerate(items) if kind == "clean"}
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    kinds, origins = [], []
    with open(out / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption", "source"])
        for row, (_, kind, i) in enumerate(items):
            image = Image.fromarray(np.asarray(images[i], dtype=np.uint8))
            ext = "jpg" if kind == "jpeg" else "png"
            name = f"images/{row:06d}.{ext}"
            (out / name).write_bytes(_dirty_image(kind, image, rng))
            writer.writerow([name, _dirty_caption(kind, captions[i], rng, max_tokens), source])
            kinds.append(kind)
            origins.append(position[i])
    return DirtyPairs(out / "pairs.csv", kinds, origins)


def confusion(dirty: DirtyPairs, reasons: Sequence[str | None]) -> dict[str, dict[str | None, int]]:
    """Per dirt kind, how many of its rows each drop reason took (``reasons[row]`` from the manifest)."""
    out: dict[str, dict[str | None, int]] = {}
    for kind, reason in zip(dirty.kinds, reasons):
        out.setdefault(kind, {})
        out[kind][reason] = out[kind].get(reason, 0) + 1
    return out


def duplicate_precision_recall(dirty: DirtyPairs, duplicate_of: Sequence[int | str | None],
                               reasons: Sequence[str | None]) -> tuple[float, float]:
    """Precision and recall of the rows flagged ``duplicate_image`` against the injected near-duplicates
    (a flag is right when the row and the one it duplicates come from the same clean row)."""
    truth = {r for r, kind in enumerate(dirty.kinds) if kind in NEAR_DUPLICATES}
    found = {r: d for r, (d, reason) in enumerate(zip(duplicate_of, reasons)) if reason == "duplicate_image"}
    correct = sum(r in truth and dirty.origin[r] == dirty.origin[d] for r, d in found.items())
    return correct / max(1, len(found)), correct / max(1, len(truth))


# ----------------------------------------------------------------------------------------------- dedup check
EDITS = ("resize", "jpeg_q35", "crop_4pct", "brightness")
"""The near-duplicate edits of issue 11's measurement: rescaling, JPEG quality 35, a 4% crop, brightness."""


def edit_image(kind: str, image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``image`` changed by one of :data:`EDITS` (random strength)."""
    w, h = image.size
    if kind == "resize":
        s = rng.uniform(0.5, 1.5)
        return image.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BICUBIC)
    if kind == "jpeg_q35":
        return Image.open(io.BytesIO(_encode(image.convert("RGB"), "JPEG", 35))).convert("RGB")
    if kind == "crop_4pct":
        dx, dy = round(0.04 * w), round(0.04 * h)
        return image.crop([(dx, 0, w, h), (0, dy, w, h), (0, 0, w - dx, h), (0, 0, w, h - dy)][rng.integers(4)])
    if kind == "brightness":
        return ImageEnhance.Brightness(image).enhance(float(rng.choice([0.75, 0.85, 1.15, 1.3])))
    raise ValueError(f"kind: {kind!r} is not one of {', '.join(EDITS)}")


def duplicate_rates(images: Sequence[Image.Image], dedup_factory: Callable[[], Any], hash_size: int = 8,
                    edits_per_kind: int = 100, seed: int = 0) -> dict[str, float]:
    """Known answers: distinct ``images`` fed in order (each one flagged is a false positive: ``distinct_dropped``),
    then edited copies of random ones against them (``caught_<edit>``, and ``caught`` over all edits)."""
    from .dedup import fine_descriptor, phash

    rng = np.random.default_rng(seed)
    dedup = dedup_factory()
    codes = np.stack([phash(im, hash_size) for im in images])
    fines = [fine_descriptor(im) for im in images]
    dropped = sum(d is not None for d in dedup.assign(codes, list(range(len(images))), fines))
    out = {"distinct": len(images), "distinct_dropped": dropped / len(images)}
    for kind in EDITS:
        origins = rng.integers(0, len(images), edits_per_kind)
        edited = [edit_image(kind, images[i], rng) for i in origins]
        hits = dedup.index.search(np.stack([phash(im, hash_size) for im in edited]))
        caught = 0
        for im, (ids, _) in zip(edited, hits):
            fine = fine_descriptor(im)
            caught += any(dedup.confirmed(fine, int(r)) for r in ids)
        out[f"caught_{kind}"] = caught / edits_per_kind
    out["caught"] = float(np.mean([out[f"caught_{k}"] for k in EDITS]))
    return out
