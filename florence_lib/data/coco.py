"""MS-COCO captions (image-text retrieval) and instances (detection), read with the pycocotools COCO api."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.ops import box_convert

from .errors import BadSampleLog, DataError, decode_text, load_image


def load_coco(ann_file: str | Path) -> COCO:
    """pycocotools' COCO index, quietly (it prints timings); a DataError naming the file if malformed."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann_file))
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as exc:
        raise DataError(f"{ann_file}: not a COCO annotation file ({type(exc).__name__}: {exc})") from exc


def _existing_images(coco: COCO, root: Path, ann_file: Path, log: BadSampleLog) -> list[int]:
    ids = []
    for image_id in sorted(coco.imgs):
        if (root / coco.imgs[image_id]["file_name"]).is_file():
            ids.append(image_id)
        else:
            log.bad(
                "missing_file", ann_file, f"image_id={image_id}", str(root / coco.imgs[image_id]["file_name"])
            )
    return ids


class CocoCaptions(torch.utils.data.Dataset):
    """Images with all their captions (5 per image in COCO), indexed for retrieval.

    ``__getitem__`` gives ``(image, [captions])``; ``captions`` is the flat caption list and ``caption_image``
    the image index of each, the ground truth of text->image and image->text recall.
    """

    def __init__(
        self,
        root: str | Path,
        ann_file: str | Path,
        transform: Callable | None = None,
        strict: bool = False,
        log: BadSampleLog | None = None,
    ):
        self.root, self.ann_file, self.transform = Path(root), Path(ann_file), transform
        self.log = log if log is not None else BadSampleLog(strict, name=str(ann_file), echo=True)
        coco = load_coco(ann_file)
        self.image_ids: list[int] = []
        self.files: list[str] = []
        self.image_captions: list[list[str]] = []
        for image_id in _existing_images(coco, self.root, self.ann_file, self.log):
            captions = []
            for ann in coco.imgToAnns.get(image_id, []):
                text = decode_text(
                    ann.get("caption"), self.log, self.ann_file, f"annotation id={ann.get('id')}"
                )
                if text is not None:
                    captions.append(text)
            if not captions:
                self.log.bad("no_captions", self.ann_file, f"image_id={image_id}")
                continue
            self.image_ids.append(image_id)
            self.files.append(coco.imgs[image_id]["file_name"])
            self.image_captions.append(captions)
        self.captions = [c for caps in self.image_captions for c in caps]
        self.caption_image = [i for i, caps in enumerate(self.image_captions) for _ in caps]
        self.log.report()

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Any, list[str]] | None:
        image = load_image(
            self.root / self.files[index], self.log, self.ann_file, f"image_id={self.image_ids[index]}"
        )
        if image is None:
            return None
        return (self.transform(image) if self.transform else image), self.image_captions[index]


class CocoDetection(torch.utils.data.Dataset):
    """Images with their boxes: target ``boxes`` (``tv_tensors.BoundingBoxes``, XYXY pixels), ``labels``
    (contiguous 0..K-1 over the sorted category ids), ``category_ids``, ``iscrowd``, ``image_id``.

    ``transforms(image, target)`` sees both, so torchvision.transforms.v2 moves the boxes with the image.
    Images without annotations are kept (empty targets), as in COCO evaluation.
    """

    def __init__(
        self,
        root: str | Path,
        ann_file: str | Path,
        transforms: Callable | None = None,
        strict: bool = False,
        log: BadSampleLog | None = None,
    ):
        self.root, self.ann_file, self.transforms = Path(root), Path(ann_file), transforms
        self.log = log if log is not None else BadSampleLog(strict, name=str(ann_file), echo=True)
        self.coco = load_coco(ann_file)
        self.category_ids = sorted(self.coco.cats)
        self.label_of = {c: i for i, c in enumerate(self.category_ids)}
        self.classes = [self.coco.cats[c]["name"] for c in self.category_ids]
        self.image_ids = _existing_images(self.coco, self.root, self.ann_file, self.log)
        self.annotations = {i: self._valid(i) for i in self.image_ids}
        self.log.report()

    def _valid(self, image_id: int) -> list[dict[str, Any]]:
        info, kept = self.coco.imgs[image_id], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            box, where = ann.get("bbox"), f"annotation id={ann.get('id')}"
            if ann.get("category_id") not in self.label_of:
                self.log.bad("unknown_category", self.ann_file, where, str(ann.get("category_id")))
            elif not (
                isinstance(box, list)
                and len(box) == 4
                and box[2] > 0
                and box[3] > 0
                and box[0] >= 0
                and box[1] >= 0
                and box[0] + box[2] <= info["width"] + 1
                and box[1] + box[3] <= info["height"] + 1
            ):
                self.log.bad("malformed_box", self.ann_file, where, str(box))
            else:
                kept.append(ann)
        return kept

    @property
    def num_boxes(self) -> int:
        return sum(len(a) for a in self.annotations.values())

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]] | None:
        image_id = self.image_ids[index]
        info, anns = self.coco.imgs[image_id], self.annotations[image_id]
        image = load_image(self.root / info["file_name"], self.log, self.ann_file, f"image_id={image_id}")
        if image is None:
            return None
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                box_convert(xywh, "xywh", "xyxy"), format="XYXY", canvas_size=(image.height, image.width)
            ),
            "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "category_ids": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "iscrowd": torch.tensor([a.get("iscrowd", 0) for a in anns], dtype=torch.bool),
            "image_id": image_id,
        }
        return self.transforms(image, target) if self.transforms else (image, target)


def detection_collate(batch: list[tuple[Any, dict[str, Any]] | None]) -> tuple[tuple, tuple]:
    """``(images, targets)`` as tuples: detection targets differ in size, so they are not stacked."""
    kept = [b for b in batch if b is not None]
    return (tuple(b[0] for b in kept), tuple(b[1] for b in kept))
