"""Figures of data samples for the notebooks: world scenes with boxes and captions, Q/A, clips, domains, and
a few images of each real evaluation set. Each function returns a matplotlib Figure (the caller shows or
saves it), so the notebooks hold no plotting code.
"""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from .world import Scene, World

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _grid(n: int, cols: int, cell: float = 2.2, text_rows: float = 0.0) -> tuple[Figure, np.ndarray]:
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, (cell + text_rows) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes.flat


def draw_scene(ax: plt.Axes, scene: Scene, world: World, boxes: bool = True, caption: int | None = -1) -> None:
    """The scene's image on ``ax``, with its boxes (labelled by category) and one caption as the title."""
    ax.imshow(scene.image, interpolation="nearest")
    if boxes:
        for (x0, y0, x1, y1), k in zip(scene.boxes, scene.box_labels):
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1, ec="white"))
            ax.text(x0, y0 - 1, world.categories[k], color="white", fontsize=6, va="bottom",
                    bbox={"fc": "black", "alpha": 0.6, "pad": 0.5, "lw": 0})
    if caption is not None:
        ax.set_title(textwrap.fill(scene.captions[caption], 34), fontsize=6)
    ax.axis("off")


def scene_gallery(world: World, split: str = "train", n: int = 12, cols: int = 4, image_size: int = 96,
                  boxes: bool = True) -> Figure:
    """``n`` scenes with boxes and their longest caption."""
    fig, axes = _grid(n, cols, text_rows=0.6)
    for i, ax in zip(range(n), axes):
        draw_scene(ax, world.scene(split, i, image_size=image_size), world, boxes=boxes)
    fig.tight_layout()
    return fig


def captions_and_qa(world: World, split: str = "train", index: int = 0, image_size: int = 128,
                    domain: str = "clean") -> Figure:
    """One scene beside all its captions (short to long) and its question/answer pairs."""
    scene = world.scene(split, index, domain=domain, image_size=image_size)
    fig, (ax_img, ax_txt) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 2.2]})
    draw_scene(ax_img, scene, world, caption=None)
    ax_img.set_title(f"{split} #{index}: class '{scene.class_name}'", fontsize=8)
    lines = ["Captions:"] + [textwrap.fill(f"  {c}", 95) for c in scene.captions]
    lines += ["", "Questions:"] + [f"  Q: {q}   A: {a}" for q, a in scene.qa]
    ax_txt.text(0, 1, "\n".join(lines), va="top", fontsize=7, family="monospace")
    ax_txt.axis("off")
    fig.tight_layout()
    return fig


def domain_row(world: World, split: str = "train", indices: tuple[int, ...] = (0, 1, 2), image_size: int = 96
               ) -> Figure:
    """The same scenes rendered in every domain (rows: scenes, columns: domains)."""
    fig, axes = _grid(len(indices) * len(world.domains), len(world.domains))
    for r, index in enumerate(indices):
        for c, domain in enumerate(world.domains):
            ax = axes[r * len(world.domains) + c]
            ax.imshow(world.scene(split, index, domain, image_size).image)
            if r == 0:
                ax.set_title(domain, fontsize=9)
    fig.tight_layout()
    return fig


def clip_strips(world: World, split: str = "train", indices: tuple[int, ...] = (0, 1, 2, 3), image_size: int = 64
                ) -> Figure:
    """Each clip as a row of frames, titled with its action and caption; the actor's box in white."""
    length = world.cfg.clip_length
    fig, axes = _grid(len(indices) * length, length, cell=1.3)
    for r, index in enumerate(indices):
        clip = world.clip(split, index, image_size=image_size)
        for t in range(length):
            ax = axes[r * length + t]
            ax.imshow(clip.frames[t], interpolation="nearest")
            x0, y0, x1, y1 = clip.boxes[t]
            if np.isfinite(x0):
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=0.8, ec="white"))
        axes[r * length].set_title(f"[{clip.action}] {clip.caption}", fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def heldout_gallery(world: World, n: int = 8, image_size: int = 96) -> Figure:
    """Scenes of the heldout split: their main object is a (shape, colour) pair absent from train/val/test."""
    fig, axes = _grid(n, min(n, 4), text_rows=0.4)
    for i, ax in zip(range(n), axes):
        scene = world.scene("heldout", i, image_size=image_size)
        draw_scene(ax, scene, world, boxes=False, caption=None)
        ax.set_title(f"held out: {scene.class_name}", fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------- real data
def _first_images(folder: Path, k: int) -> list[Path]:
    """Up to ``k`` images of an ImageFolder, one class after another (the first image of each class first)."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    per_class = [sorted(f for f in c.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES) for c in classes]
    return [files[j] for j in range(k) for files in per_class if j < len(files)][:k]


def _video_frame(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def real_samples(data_root: str | Path, k: int = 6) -> dict[str, list[tuple[np.ndarray, str]]]:
    """A few (image, label) samples of every real set found under ``data_root``, read with PIL/av directly."""
    root = Path(data_root)
    out: dict[str, list[tuple[np.ndarray, str]]] = {}
    for name in ("eurosat", "cifar10_test", "isic2018", "plantvillage_apple"):
        if (root / name).is_dir():
            out[name] = [(np.asarray(Image.open(p).convert("RGB")), p.parent.name)
                         for p in _first_images(root / name, k)]
    labels = root / "chestx14" / "labels.csv"
    if labels.is_file():
        with open(labels, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))[:k]
        out["chestx14"] = [(np.asarray(Image.open(root / "chestx14" / "images" / r["image"]).convert("RGB")),
                            r["finding_labels"]) for r in rows]
    captions = root / "coco" / "annotations" / "captions_val2017.json"
    if captions.is_file():
        ann = json.loads(captions.read_text(encoding="utf-8"))
        first = {}
        for a in ann["annotations"]:
            first.setdefault(a["image_id"], a["caption"].strip())
        images = [im for im in ann["images"] if im["id"] in first][:k]
        out["coco"] = [(np.asarray(Image.open(root / "coco" / "val2017" / im["file_name"]).convert("RGB")),
                        first[im["id"]]) for im in images]
    vqa = next(iter(sorted((root / "vqa").glob("*.json"))), None) if (root / "vqa").is_dir() else None
    if vqa is not None:
        items = json.loads(vqa.read_text(encoding="utf-8"))[:k]
        out["vqa"] = [(np.asarray(Image.open(root / q["image"]).convert("RGB")),  # paths start at data_root
                       f"{q['question']} -> {q['answer']}") for q in items]
    video = root / "video" / "labels.csv"
    if video.is_file():
        with open(video, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))[:k]
        out["video"] = [(_video_frame(root / "video" / r["file"]), r["label"]) for r in rows]
    return out


def real_gallery(samples: dict[str, list[tuple[np.ndarray, str]]]) -> Figure:
    """One row per real set: its images titled with their labels (or caption / question and answer)."""
    cols = max((len(v) for v in samples.values()), default=1)
    fig, axes = _grid(max(1, len(samples)) * cols, cols, cell=2.0, text_rows=0.5)
    for r, (name, items) in enumerate(samples.items()):
        for c, (image, label) in enumerate(items):
            ax = axes[r * cols + c]
            ax.imshow(image)
            ax.set_title(textwrap.fill(f"{name}: {label}" if c == 0 else label, 30), fontsize=6)
    fig.tight_layout()
    return fig
