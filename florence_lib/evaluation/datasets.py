"""Which evaluation set lives where: the embedded world's views and the real sets under ``data_root``.

A name resolves to a torch Dataset of ``(image, label)`` (classification) or images with their captions
(retrieval), plus the class names and prompt templates zero-shot needs. Names:

- ``world``: the world's test split (64 colour-shape classes); ``world-heldout``: the held-out colour-shape
  combinations never seen in pretraining (compositional zero-shot); ``world-<domain>`` (photo, sketch,
  thermal, xray): a rendering domain, labelled by shape (8 classes), for cross-domain few-shot.
- ``eurosat``, ``cifar10_test``, ``isic2018``, ``plantvillage_apple`` (ImageFolder) and ``chestx14``
  (single-finding images of the seven CD-FSL ChestX classes) under ``data_root``; ``coco`` captions (val2017).

The real sets ship one folder, not train/test splits, so ``split`` takes a stratified, seeded share of it
(``test_fraction`` for "test", the rest for "train"); ``split="all"`` is the whole folder (few-shot episodes
draw from all of it, as CD-FSL does). Class names and templates come from CLIP's prompt file when it lists the
set, else from the built-in names below and CLIP's seven ImageNet templates.

Any other name is a path to the user's own set (see :mod:`.user_data`); :func:`check_dataset` tells, before a
model is built, whether a name or path can serve a protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from ..data.coco import CocoCaptions
from ..data.errors import DataError
from ..data.loaders import CDFSL_CHESTX_CLASSES, ChestXray14, ImageFolderDataset
from ..data.pairs import ImageTextPairs
from ..data.prompts import IMAGE_TEMPLATES, load_clip_prompts
from ..data.transforms import eval_transform, train_transform
from ..data.world import World, WorldClassification, WorldConfig, WorldPairs, WorldRetrieval
from ..data.world_render import DOMAINS
from .user_data import (
    CLASSIFICATION_LAYOUT,
    RETRIEVAL_LAYOUT,
    UserDataset,
    class_names,
    describe,
    looks_like_path,
    read_templates,
)

Split = Literal["train", "test", "all"]

IMAGE_FOLDERS = ("eurosat", "cifar10_test", "isic2018", "plantvillage_apple")
REAL_CLASSIFICATION = (*IMAGE_FOLDERS, "chestx14")
WORLD_CLASSIFICATION = ("world", "world-heldout", *(f"world-{d}" for d in DOMAINS if d != "clean"))
RETRIEVAL_SETS = ("world", "coco")
RETRIEVAL_PROTOCOLS = ("retrieval", "finetune_retrieval")
CLIP_PROMPT_SECTIONS = {"eurosat": "EuroSAT", "cifar10_test": "CIFAR10"}
CLIP_CLASS_ORDER = {
    "eurosat": ("Forest", "PermanentCrop", "Residential", "River", "Pasture", "SeaLake",
                "HerbaceousVegetation", "AnnualCrop", "Industrial", "Highway"),
    "cifar10_test": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                     "truck"),
}
"""The folder of each class of CLIP's prompt file, in the file's order (EuroSAT's is not alphabetical)."""
CLASS_NAMES = {
    "isic2018": {"akiec": "actinic keratosis", "bcc": "basal cell carcinoma", "bkl": "benign keratosis",
                 "df": "dermatofibroma", "mel": "melanoma", "nv": "melanocytic nevus",
                 "vasc": "vascular lesion"},
}
"""Readable names for folders whose names are codes; other folders are humanised (``Apple___Black_rot``)."""


@dataclass
class ClassificationSet:
    name: str
    dataset: Dataset  # yields (image tensor, class index)
    targets: np.ndarray  # class index of every item, without reading an image
    classes: list[str | list[str]]  # a name, or synonyms, per class
    templates: list[str]


@dataclass
class RetrievalSet:
    name: str
    dataset: Dataset  # yields image tensors, in the order of image_to_captions
    captions: list[str]  # flat
    image_to_captions: list[list[int]]


class _ImagesOnly(Dataset):
    """The images of an ``(image, captions)`` dataset: captions vary in number and cannot be batched."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if item is None:
            raise RuntimeError(f"image {index} of {self.dataset} could not be read; retrieval needs them all")
        return item[0]


class _CaptionPairs(Dataset):
    """Every (image, caption) of captioned images as ``{"image", "text", "label"}``, label = image index."""

    def __init__(self, images: Dataset, per_image: Sequence[Sequence[str]]) -> None:
        self.images = images  # yields image tensors, in the order of per_image
        self.pairs = [(i, c) for i, caps in enumerate(per_image) for c in caps]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_index, caption = self.pairs[index]
        return {"image": self.images[image_index], "text": caption, "label": image_index}


def _world(world_seed: int, image_size: int, label_by: str = "shape_colour") -> World:
    return World(WorldConfig(seed=world_seed, image_size=image_size, label_by=label_by))


def _require(data_root: str | Path | None, name: str) -> Path:
    if data_root is None:
        raise DataError(f"dataset {name!r} is read from data_root, and none was given (--data-root or "
                        "$FLORENCE_DATA_ROOT)")
    path = Path(data_root)
    if not path.is_dir():
        raise DataError(f"data_root {path} is not a directory")
    return path


def stratified_split(targets: Sequence[int], split: Split, test_fraction: float, seed: int) -> np.ndarray:
    """Indices of ``split`` in a seeded, class-stratified train/test split of ``targets``."""
    from sklearn.model_selection import train_test_split  # lazily: seconds to import, real sets only

    idx = np.arange(len(targets))
    if split == "all":
        return idx
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed,
                                   stratify=np.asarray(targets))
    return np.sort(test if split == "test" else train)


def _cap(indices: np.ndarray, targets: np.ndarray, max_images: int | None, seed: int) -> np.ndarray:
    """At most ``max_images`` of ``indices``, stratified by class so that a small cap keeps every class."""
    if max_images is None or len(indices) <= max_images:
        return indices
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(indices, train_size=max_images, random_state=seed, stratify=targets[indices])
    return np.sort(keep)


def classification_set(name: str, split: Split = "test", *, data_root: str | Path | None = None,
                       image_size: int = 64, max_images: int | None = None, test_fraction: float = 0.5,
                       world_seed: int = 0, seed: int = 0) -> ClassificationSet:
    """The classification set ``name`` (see the module docstring), resized to ``image_size``."""
    transform = eval_transform(image_size)
    if name in WORLD_CLASSIFICATION:
        return _world_classification(name, split, image_size, max_images or 1000, world_seed, transform)
    if name not in REAL_CLASSIFICATION:
        user = check_dataset("zero_shot", name, data_root)
        return _user_classification(user, split, transform, max_images, test_fraction, seed)
    root = _require(data_root, name) / name
    if name == "chestx14":
        full: Any = ChestXray14(root, transform, classes=CDFSL_CHESTX_CLASSES, single_finding=True)
        classes: list[str | list[str]] = [c.lower() for c in CDFSL_CHESTX_CLASSES]
        templates = ["a chest x-ray showing {}.", "an x-ray image of {}.", "a radiograph with {}."]
    else:
        full = ImageFolderDataset(root, transform)
        classes, templates = _names_and_templates(name, full.classes, full.class_names, data_root)
    targets = np.asarray(full.targets)
    indices = _cap(stratified_split(targets, split, test_fraction, seed), targets, max_images, seed)
    return ClassificationSet(name, Subset(full, indices.tolist()), targets[indices], classes, templates)


def _user_classification(user: UserDataset, split: Split, transform: Any, max_images: int | None,
                         test_fraction: float, seed: int) -> ClassificationSet:
    """A user's ImageFolder: its own train/ and test/ splits, or one folder split stratified by ``seed``."""
    root = user.path
    if user.layout == "splits":
        train = ImageFolderDataset(root / "train", transform)
        test = ImageFolderDataset(root / "test", transform)
        test.samples = [(path, train.class_to_idx[test.classes[t]]) for path, t in test.samples]
        test.targets = [t for _, t in test.samples]  # in train's class order: test may lack a class
        parts = {"train": [train], "test": [test], "all": [train, test]}[split]
        full: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        targets = np.concatenate([np.asarray(d.targets) for d in parts])
        indices = _cap(np.arange(len(targets)), targets, max_images, seed)
        reference = train
    else:
        full = reference = ImageFolderDataset(root, transform)
        targets = np.asarray(reference.targets)
        counts = np.bincount(targets, minlength=len(reference.classes))
        if split != "all" and counts.min() < 2:
            raise DataError(f"{root}: class folder {reference.classes[int(counts.argmin())]!r} has "
                            f"{int(counts.min())} image(s); a train/test split needs 2 per class (or use "
                            "train/ and test/ subfolders)")
        indices = _cap(stratified_split(targets, split, test_fraction, seed), targets, max_images, seed)
    classes = class_names(root, reference.classes, reference.class_names)
    return ClassificationSet(user.label, Subset(full, indices.tolist()), targets[indices], classes,
                             read_templates(root))


def dataset_label(name: str) -> str:
    """What records call a set: its name, or the folder name / file stem of a user's path."""
    return Path(name).name if Path(name).is_dir() else Path(name).stem if looks_like_path(name) else name


def check_dataset(protocol: str, name: str, data_root: str | Path | None = None,
                  images: str | Path | None = None) -> UserDataset | None:
    """None for a known set (whose data_root folder exists), the :class:`UserDataset` for a usable path;
    DataError (one line: what was found, what was expected) for anything else. Reads no image."""
    retrieval = protocol in RETRIEVAL_PROTOCOLS
    known = RETRIEVAL_SETS if retrieval else WORLD_CLASSIFICATION + REAL_CLASSIFICATION
    if name in known:
        if not name.startswith("world"):
            folder = _require(data_root, name) / name
            if not folder.is_dir():
                raise DataError(f"dataset {name!r}: {folder} does not exist")
        return None
    if not looks_like_path(name):
        layout = RETRIEVAL_LAYOUT if retrieval else CLASSIFICATION_LAYOUT
        raise DataError(f"unknown {'retrieval' if retrieval else 'classification'} set {name!r}; expected one "
                        f"of {', '.join(known)}, or a path to {layout}")
    return describe(name, "retrieval" if retrieval else "classification", images)


def _names_and_templates(name: str, folders: list[str], humanised: list[str],
                         data_root: str | Path | None) -> tuple[list[str | list[str]], list[str]]:
    prompts = load_clip_prompts(data_root).get(CLIP_PROMPT_SECTIONS.get(name, ""))
    if prompts is not None:
        order = CLIP_CLASS_ORDER[name]
        if len(prompts.synonyms) != len(order) or sorted(order) != sorted(folders):
            raise ValueError(f"CLIP prompts for {name}: expected classes for the folders {', '.join(order)}; "
                             f"found {len(prompts.synonyms)} classes and the folders {', '.join(folders)}")
        by_folder = dict(zip(order, prompts.synonyms))
        names = [by_folder[f] if len(by_folder[f]) > 1 else by_folder[f][0] for f in folders]
        return names, list(prompts.templates)
    names = CLASS_NAMES.get(name, {})
    return [names.get(f, h) for f, h in zip(folders, humanised)], list(IMAGE_TEMPLATES)


def _world_classification(name: str, split: Split, image_size: int, size: int, world_seed: int,
                          transform: Any) -> ClassificationSet:
    domain = name.removeprefix("world-") if name.startswith("world-") and name != "world-heldout" else "clean"
    world = _world(world_seed, image_size, "shape" if domain != "clean" else "shape_colour")
    world_split = "heldout" if name == "world-heldout" else ("train" if split == "train" else "test")
    data = WorldClassification(world, world_split, size, domain=domain, transform=transform)
    return ClassificationSet(name, data, np.asarray(data.targets), list(data.classes), list(data.templates))


def retrieval_set(name: str, *, data_root: str | Path | None = None, image_size: int = 64,
                  max_images: int | None = None, captions_per_image: int = 5, world_seed: int = 0,
                  images: str | Path | None = None, split: Split = "all", test_fraction: float = 0.5,
                  seed: int = 0) -> RetrievalSet:
    """``world`` (test split, ``captions_per_image`` captions each), ``coco`` (val2017 captions), or a user's
    COCO-captions JSON / image-caption table (``split``: all its images, or a seeded train/test share)."""
    transform = eval_transform(image_size)
    if name == "world":
        data = WorldRetrieval(_world(world_seed, image_size), "test", max_images or 500, captions_per_image,
                              transform=transform)
        per_image = data.captions
    elif name == "coco":
        root = _require(data_root, name) / "coco"
        coco = CocoCaptions(root / "val2017", root / "annotations" / "captions_val2017.json", transform)
        per_image = coco.image_captions[:max_images]
        data = _ImagesOnly(Subset(coco, range(len(per_image))))
    else:
        user = check_dataset("retrieval", name, data_root, images)
        source, all_captions = _user_captions(user, transform)
        keep = _image_split(len(all_captions), split, test_fraction, seed)[:max_images]
        data, per_image = Subset(source, keep.tolist()), [all_captions[i] for i in keep]
    captions = [c for caps in per_image for c in caps]
    offsets = np.cumsum([0] + [len(c) for c in per_image])
    image_to_captions = [list(range(offsets[i], offsets[i + 1])) for i in range(len(per_image))]
    return RetrievalSet(dataset_label(name), data, captions, image_to_captions)


def _image_split(n: int, split: Split, test_fraction: float, seed: int) -> np.ndarray:
    """A seeded train/test split of ``n`` captioned images (both non-empty), or all of them."""
    if split == "all":
        return np.arange(n)
    if n < 2:
        raise DataError(f"a train/test split needs at least 2 images; found {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    return np.sort(order[:n_test] if split == "test" else order[n_test:])


def _user_captions(user: UserDataset, transform: Any) -> tuple[Dataset, list[list[str]]]:
    """A user's captioned images: a dataset of image tensors and the captions of each, in one order."""
    if user.layout == "coco":
        coco = CocoCaptions(user.images, user.path, transform)
        return _ImagesOnly(coco), coco.image_captions
    pairs = ImageTextPairs(user.path, transform)
    position: dict[Path, int] = {}  # image -> its index; an image on several rows has several captions
    first_rows: list[int] = []
    per_image: list[list[str]] = []
    for row, (path, caption, _) in enumerate(pairs.samples):
        if path not in position:
            position[path] = len(per_image)
            first_rows.append(row)
            per_image.append([])
        per_image[position[path]].append(caption)
    if not per_image:
        raise DataError(f"{user.path}: no usable image-caption rows")
    return _ImagesOnly(Subset(pairs, first_rows)), per_image


def retrieval_train_pairs(name: str, *, data_root: str | Path | None = None, image_size: int = 64,
                          max_images: int | None = None, world_seed: int = 0, images: str | Path | None = None,
                          test_fraction: float = 0.5, seed: int = 0) -> Dataset:
    """Image-text pairs to fine-tune retrieval on (``{"image", "text", "label"}``, light random crops): the
    world's train split with its long captions, COCO train2017 with all five captions per image, or the train
    share of a user's set (the images :func:`retrieval_set` with ``split="test"`` leaves out)."""
    transform = train_transform(image_size)
    if name == "world":
        world = _world(world_seed, image_size)
        return WorldPairs(world, "train", max_images or 2000, transform, caption="long")
    if name == "coco":
        root = _require(data_root, name) / "coco"
        coco = CocoCaptions(root / "train2017", root / "annotations" / "captions_train2017.json", transform)
        return _CaptionPairs(_ImagesOnly(coco), coco.image_captions)
    user = check_dataset("retrieval", name, data_root, images)
    source, per_image = _user_captions(user, transform)
    keep = _image_split(len(per_image), "train", test_fraction, seed)[:max_images]
    return _CaptionPairs(Subset(source, keep.tolist()), [per_image[i] for i in keep])
