"""Image-label sets in their native layouts: ImageFolder classification and NIH ChestX-ray14.

Map-style datasets return ``(image, target)``, or None for a record whose image turns out bad when read
(strict mode raises instead); batch them with ``collate_fn=collate_skip_none``. Problems visible from the
index (missing files, malformed rows) are found at construction, so ``len()`` counts only usable records.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.datasets import ImageFolder

from .errors import BadSampleLog, load_image, read_table

# The seven single-finding classes of the CD-FSL ChestX benchmark (Guo et al. 2020), as in Florence's few-shot
# table.
CDFSL_CHESTX_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumothorax",
)
# The 14 findings of ChestX-ray14 (Wang et al. 2017) plus the label of clear images.
CHESTX_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
    "No Finding",
)


def humanize(folder: str) -> str:
    """A readable class name from a folder name: ``AnnualCrop`` -> ``annual crop``, ``Apple___Black_rot`` ->
    ``apple black rot`` (override with real names, e.g. CLIP's, when prompting)."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", folder.replace("_", " "))
    return " ".join(words.lower().split())


class ImageFolderDataset(ImageFolder):
    """torchvision's ImageFolder (``root/<class>/<file>``) plus readable ``class_names``; logs bad images."""

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        strict: bool = False,
        log: BadSampleLog | None = None,
        class_names: Sequence[str] | None = None,
    ):
        super().__init__(str(root), transform=transform)
        self.log = log if log is not None else BadSampleLog(strict, name=str(root), echo=True)
        self.class_names = (
            list(class_names) if class_names is not None else [humanize(c) for c in self.classes]
        )
        if len(self.class_names) != len(self.classes):
            raise ValueError(f"{root}: {len(self.class_names)} class names for {len(self.classes)} classes")

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, target = self.samples[index]
        image = load_image(path, self.log)
        if image is None:
            return None
        return (self.transform(image) if self.transform else image), target


class ChestXray14(torch.utils.data.Dataset):
    """NIH ChestX-ray14: ``root/images/*.png`` + ``root/labels.csv`` (image, finding_labels, split, ...).

    ``finding_labels`` are ``|``-separated as in the original Data_Entry file. By default the target is a
    multi-hot float vector over ``classes``; with ``single_finding=True`` only images with exactly one finding
    among ``classes`` are kept and the target is its index (the CD-FSL few-shot protocol, with
    ``classes=CDFSL_CHESTX_CLASSES``).
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        split: str | None = None,
        classes: Sequence[str] = CHESTX_FINDINGS,
        single_finding: bool = False,
        mode: str = "RGB",
        strict: bool = False,
        log: BadSampleLog | None = None,
    ):
        self.root, self.transform, self.mode = Path(root), transform, mode
        self.classes, self.single_finding = list(classes), single_finding
        self.log = log if log is not None else BadSampleLog(strict, name=str(self.root), echo=True)
        index = {c: i for i, c in enumerate(self.classes)}
        table = self.root / "labels.csv"
        self.samples: list[tuple[Path, list[int], int]] = []
        for line, row in read_table(table, ("image", "finding_labels", "split"), self.log):
            if split is not None and row["split"] != split:
                continue
            findings = [f.strip() for f in row["finding_labels"].split("|") if f.strip()]
            unknown = [f for f in findings if f not in CHESTX_FINDINGS]
            if not findings or unknown:
                self.log.bad("malformed_row", table, line, f"finding labels {row['finding_labels']!r}")
                continue
            path = self.root / "images" / row["image"]
            if not path.is_file():
                self.log.bad("missing_file", table, line, str(path))
                continue
            targets = [index[f] for f in findings if f in index]
            if single_finding and (len(findings) != 1 or not targets):
                continue
            self.samples.append((path, targets, line))
        self.log.report()

    @property
    def targets(self) -> list[int] | torch.Tensor:
        """Class indices (single-finding) or the [N, C] multi-hot matrix, without reading any image."""
        if self.single_finding:
            return [t[0] for _, t, _ in self.samples]
        return torch.stack([self._multi_hot(t) for _, t, _ in self.samples])

    def _multi_hot(self, targets: list[int]) -> torch.Tensor:
        vec = torch.zeros(len(self.classes))
        vec[targets] = 1.0
        return vec

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int | torch.Tensor] | None:
        path, targets, line = self.samples[index]
        image = load_image(path, self.log, self.root / "labels.csv", line, mode=self.mode)
        if image is None:
            return None
        target = targets[0] if self.single_finding else self._multi_hot(targets)
        return (self.transform(image) if self.transform else image), target
