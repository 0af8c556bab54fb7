"""torch Datasets over the embedded world, one per task: pairs (pretraining), classification, retrieval,
detection, VQA and video. Each renders its samples on the fly from (seed, split, index), so a dataset of any
size costs no memory or disk and every DataLoader worker sees the same bytes.

Images come out as float tensors [3, H, W] through ``transform`` (default: CLIP normalisation, no geometry),
which receives the uint8 image [H, W, 3] as a numpy array.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from tqdm.auto import tqdm

from .prompts import VIDEO_TEMPLATES
from .transforms import as_video, tensor_transform
from .world_render import COLOUR_NAMES, POSITIONS, SHAPES
from .world_text import article, hard_negative
from .world_text import captions as scene_captions

if TYPE_CHECKING:
    from .world import World

Transform = Callable[..., Any]
VIEW_STREAM = 2  # random stream of a dataset view (caption choice, image-label choice, template): not the scene's
NEGATIVE_STREAM = 3  # random stream of a pair's hard negative (whether it has one, which swap), apart from the view's


class _WorldDataset(Dataset):
    def __init__(self, world: World, split: str, size: int | None = None, transform: Transform | None = None
                 ) -> None:
        self.world, self.split = world, split
        self.size = world.split_size(split) if size is None else size
        if self.size < 1:
            raise ValueError(f"size: {self.size} must be at least 1")
        self.transform = transform or tensor_transform()

    def __len__(self) -> int:
        return self.size

    def _check(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of size {len(self)}")
        return index


def class_texts(world: World) -> dict[str, int]:
    """Every text that names one class and nothing else: 'a red circle' and each prompt, mapped to the class."""
    out: dict[str, int] = {}
    for c, name in enumerate(world.classes):
        out[f"{article(name)} {name}"] = c
        for template in world.templates:
            out[template.replace("{}", name)] = c
    return out


CAPTION_MODES = ("mixed", "short", "long", "varied")


class WorldPairs(_WorldDataset):
    """Image-text pairs with UniCL labels: ``dict(image=Tensor[3, H, W], text=str, label=int)``.

    ``caption``: "short" (the shared 'a red circle' caption), "long" (the most descriptive one), "mixed"
    (short with probability ``world.cfg.caption_repeat``, else long) or "varied" (short with that probability,
    else one of the five descriptive captions, uniformly: the phrasings retrieval queries with). With probability
    ``image_label_fraction`` a sample is image-label data instead: its text is a prompt template filled with
    its class name and its label is the class index. A caption identical to a class's own text (its short
    caption 'a red circle' or one of its prompts 'a red circle.') takes that class's label, so the two are
    positives, not each other's negatives; every other caption text gets an id after the classes, one per
    distinct text (equal text <=> equal id). ``num_labels`` counts them all.

    ``hard_negatives``: the share of pairs with a multi-object descriptive caption (not the short one, not
    image-label data, not a one-object scene) that also carry ``negative``, the caption made false by swapping an
    attribute between two of the scene's objects (``world_text.hard_negative``, NegCLIP), never into a held-out
    (shape, colour) combination outside the heldout split. A negative that is some training pair's own text or a
    class text is dropped, so no image in the dataset has it as its positive: the loss takes negatives as extra
    image-to-text columns with no positive row (``losses.unicl_loss``).
    ``negatives[i]`` is pair i's negative or None.
    """

    def __init__(self, world: World, split: str, size: int | None = None, transform: Transform | None = None,
                 caption: Literal["mixed", "short", "long", "varied"] = "mixed",
                 image_label_fraction: float = 0.0, hard_negatives: float = 0.0) -> None:
        super().__init__(world, split, size, transform)
        if caption not in CAPTION_MODES:
            raise ValueError(f"caption: {caption!r} is not one of {', '.join(map(repr, CAPTION_MODES))}")
        if not 0.0 <= image_label_fraction <= 1.0:
            raise ValueError(f"image_label_fraction: {image_label_fraction} is outside [0, 1]")
        if not 0.0 <= hard_negatives <= 1.0:
            raise ValueError(f"hard_negatives: {hard_negatives} is outside [0, 1]")
        n_classes = len(world.classes)
        self.class_texts = class_texts(world)
        table: dict[str, int] = {}
        self.texts: list[str] = []
        self.labels: list[int] = []
        self.is_image_label: list[bool] = []
        self.negatives: list[str | None] = []
        # a negative names no held-out combination outside the heldout split (no train/val/test text does)
        excluded = frozenset() if split == "heldout" else frozenset(world.heldout_pairs)
        for i in tqdm(range(self.size), desc=f"world {split} pairs", disable=self.size < 20_000):
            u = world.rng(split, i, VIEW_STREAM).random(3)
            layout = world.layout(split, i)
            image_label = bool(u[0] < image_label_fraction)
            if image_label:
                label = world.label_of(layout)
                text = world.templates[int(u[2] * len(world.templates))].replace("{}", world.classes[label])
            else:
                caps = scene_captions(layout.objects, layout.background, layout.gradient)
                short = caption == "short" or (caption in ("mixed", "varied") and u[1] < world.cfg.caption_repeat)
                # u[2] picks the template of image-label samples only, so "varied" may reuse it here
                descriptive = caps[1 + int(u[2] * (len(caps) - 1))] if caption == "varied" else caps[-1]
                text = caps[0] if short else descriptive
                label = self.class_texts.get(text)
                if label is None:
                    label = table.setdefault(text, n_classes + len(table))
            negative = None
            if hard_negatives > 0 and not image_label and not short and len(layout.objects) > 1:
                v = world.rng(split, i, NEGATIVE_STREAM).random(2)
                if v[0] < hard_negatives:
                    negative = hard_negative(layout.objects, layout.background, layout.gradient, text, float(v[1]),
                                             excluded)
            self.negatives.append(negative)
            self.texts.append(text)
            self.labels.append(label)
            self.is_image_label.append(image_label)
        self.num_labels = n_classes + len(table)
        for i, negative in enumerate(self.negatives):  # a text some pair has as its positive is no negative
            if negative is not None and (negative in table or negative in self.class_texts):
                self.negatives[i] = None

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._check(index)
        image = self.world.scene(self.split, index).image
        sample = {"image": self.transform(image), "text": self.texts[index], "label": self.labels[index]}
        if self.negatives[index] is not None:
            sample["negative"] = self.negatives[index]
        return sample


class WorldClassification(_WorldDataset):
    """(image Tensor, class index) in one rendering ``domain``; ``classes``, ``templates`` and ``targets``."""

    def __init__(self, world: World, split: str, size: int | None = None, domain: str = "clean",
                 transform: Transform | None = None) -> None:
        super().__init__(world, split, size, transform)
        if domain not in world.domains:
            raise ValueError(f"domain: {domain!r} is not one of {', '.join(world.domains)}")
        self.domain = domain
        self.classes = list(world.classes)
        self.templates = list(world.templates)
        self.targets = [world.label_of(world.layout(split, i)) for i in range(self.size)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = self._check(index)
        return self.transform(self.world.scene(self.split, index, self.domain).image), self.targets[index]


class WorldRetrieval(_WorldDataset):
    """Images for image-text retrieval; ``captions[i]`` holds image i's ``captions_per_image`` most
    descriptive captions (the longest ones, so that a query caption identifies its image, as in COCO)."""

    def __init__(self, world: World, split: str, size: int | None = None, captions_per_image: int = 5,
                 transform: Transform | None = None) -> None:
        super().__init__(world, split, size, transform)
        if not 1 <= captions_per_image <= 6:
            raise ValueError(f"captions_per_image: {captions_per_image} is outside [1, 6]")
        self.captions: list[list[str]] = []
        for i in range(self.size):
            layout = world.layout(split, i)
            self.captions.append(scene_captions(layout.objects, layout.background, layout.gradient)[-captions_per_image:])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.world.scene(self.split, self._check(index)).image)


class WorldDetection(_WorldDataset):
    """(image Tensor, {"boxes": float [N, 4] xyxy pixels, "labels": int64 [N]}) with shape categories.

    ``transform`` is called as ``transform(image, boxes)`` with torchvision tv_tensors, so v2 geometric
    transforms move the boxes with the pixels.
    """

    categories = list(SHAPES)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scene = self.world.scene(self.split, self._check(index))
        image = tv_tensors.Image(torch.from_numpy(scene.image).permute(2, 0, 1))
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(scene.boxes), format="XYXY",
                                         canvas_size=scene.image.shape[:2])
        image, boxes = self.transform(image, boxes)
        return image.as_subclass(torch.Tensor), {"boxes": boxes.as_subclass(torch.Tensor),
                                                 "labels": torch.from_numpy(scene.box_labels)}


class WorldVQA(_WorldDataset):
    """One item per (scene, question): ``dict(image, question, answer, answer_id, scene)``; ``answers`` is
    the closed answer vocabulary (counts, colours, shapes, places, yes/no), for classification-style VQA."""

    questions_per_scene = 6
    answers = [str(k) for k in range(1, 5)] + list(COLOUR_NAMES) + list(SHAPES) + list(POSITIONS) + ["yes", "no"]

    def __len__(self) -> int:
        return self.size * self.questions_per_scene

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene_index, q = divmod(self._check(index), self.questions_per_scene)
        scene = self.world.scene(self.split, scene_index)
        question, answer = scene.qa[q]
        return {"image": self.transform(scene.image), "question": question, "answer": answer,
                "answer_id": self.answers.index(answer), "scene": scene_index}


class WorldVideo(_WorldDataset):
    """(video Tensor [T, 3, H, W], action index); ``classes`` are action names, ``templates`` video prompts.

    ``transform`` receives a torchvision Video [T, 3, H, W] uint8, so random crops are shared by all frames.
    """

    def __init__(self, world: World, split: str, size: int | None = None, transform: Transform | None = None
                 ) -> None:
        super().__init__(world, split, size, transform)
        self.classes = list(world.actions)
        self.templates = list(VIDEO_TEMPLATES)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = self.world.clip(self.split, self._check(index))
        return self.transform(as_video(clip.frames)).as_subclass(torch.Tensor), clip.label
