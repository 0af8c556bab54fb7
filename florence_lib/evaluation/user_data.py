"""A user's own evaluation sets, given by path (as CLIP_benchmark takes them): what a path holds and how to read it.

Classification (zero-shot, linear probe, fine-tuning, few-shot), a folder in one of two layouts:

- ``PATH/train/<class>/<image>`` and ``PATH/test/<class>/<image>`` (ImageFolder splits; the test split may lack
  a class, never add one), or
- ``PATH/<class>/<image>`` (one ImageFolder; train/test is then a seeded stratified split, ``test_fraction``).

Beside them, optionally: ``PATH/classnames.txt`` with ``folder<TAB>readable name`` lines (more tab-separated
names are synonyms, averaged into the class's zero-shot classifier) and ``PATH/templates.txt``, one prompt
template with ``{}`` per line (``#`` comments and blank lines skipped). Without them, folder names are humanised
(``Apple___Black_rot`` -> ``apple black rot``) and CLIP's seven ImageNet templates are used.

Retrieval: a COCO-captions JSON (``images`` next to it: ``--images DIR``, else ``../<split>/`` for
``annotations/captions_<split>.json`` as COCO ships it, else the JSON's folder) or a CSV/TSV of
``image,caption`` rows (paths relative to the table; an image on several rows has several captions).

Every check that needs no image decoding happens in :func:`describe`, before a model is built; each failure is
one line naming the path and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torchvision.datasets.folder import IMG_EXTENSIONS

from ..data.errors import DataError
from ..data.prompts import IMAGE_TEMPLATES

Kind = Literal["classification", "retrieval"]
CLASSIFICATION_LAYOUT = ("a folder of class folders of images (ImageFolder), or one with train/ and test/ "
                         "ImageFolder splits")
RETRIEVAL_LAYOUT = "a COCO-captions .json (with its image folder) or a .csv/.tsv of image,caption rows"


@dataclass(frozen=True)
class UserDataset:
    path: Path
    kind: Kind
    layout: str  # "splits" | "folder" | "coco" | "table"
    images: Path | None = None  # the image folder of a COCO-captions JSON

    @property
    def label(self) -> str:
        """A short name for records and file names: the folder's name, or the file's stem."""
        return self.path.name if self.path.is_dir() else self.path.stem


def looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.startswith(".") or Path(name).suffix != "" or Path(name).exists()


def _class_folders(root: Path) -> list[str]:
    """Class folders of an ImageFolder root that hold at least one image; DataError when there are none."""
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    with_images = [f for f in folders if any(p.suffix.lower() in IMG_EXTENSIONS for p in (root / f).rglob("*"))]
    if not with_images:
        raise DataError(f"{root}: no class folders with images; expected {CLASSIFICATION_LAYOUT}")
    return with_images


def describe(path: str | Path, kind: Kind, images: str | Path | None = None) -> UserDataset:
    """What ``path`` holds for a ``kind`` of protocol; DataError (one line) when it is not such a dataset."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"dataset {str(path)!r}: no such file or folder; expected a known set name or "
                        f"{CLASSIFICATION_LAYOUT if kind == 'classification' else RETRIEVAL_LAYOUT}")
    if kind == "classification":
        if not p.is_dir():
            raise DataError(f"{p}: not a folder; expected {CLASSIFICATION_LAYOUT}")
        if (p / "train").is_dir() and (p / "test").is_dir():
            train, test = _class_folders(p / "train"), _class_folders(p / "test")
            extra = sorted(set(test) - set(train))
            if extra:
                raise DataError(f"{p / 'test'}: classes {', '.join(extra)} are not in {p / 'train'}")
            layout = "splits"
        else:
            _class_folders(p)
            layout = "folder"
        read_classnames(p, _class_folders(p / "train") if layout == "splits" else _class_folders(p))
        read_templates(p)
        return UserDataset(p, kind, layout)
    if p.suffix.lower() == ".json":
        root = Path(images).expanduser() if images is not None else _coco_images(p)
        if not root.is_dir():
            raise DataError(f"{p}: its image folder {root} does not exist; pass --images DIR")
        return UserDataset(p, kind, "coco", root)
    if p.suffix.lower() in (".csv", ".tsv"):
        return UserDataset(p, kind, "table")
    raise DataError(f"{p}: not a retrieval set; expected {RETRIEVAL_LAYOUT}")


def _coco_images(ann_file: Path) -> Path:
    """COCO ships ``annotations/captions_val2017.json`` beside ``val2017/``; otherwise the JSON's own folder."""
    if ann_file.parent.name == "annotations" and ann_file.stem.startswith("captions_"):
        candidate = ann_file.parent.parent / ann_file.stem.removeprefix("captions_")
        if candidate.is_dir():
            return candidate
    return ann_file.parent


def read_classnames(root: Path, folders: list[str]) -> dict[str, list[str]]:
    """``classnames.txt`` beside the data: folder -> readable name(s); {} when there is none."""
    file = root / "classnames.txt"
    if not file.is_file():
        return {}
    names: dict[str, list[str]] = {}
    for line_no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 2 or not all(fields):
            raise DataError(f"{file}:{line_no}: expected 'folder<TAB>readable name', got {line!r}")
        if fields[0] not in folders:
            raise DataError(f"{file}:{line_no}: folder {fields[0]!r} is not a class of {root}")
        names[fields[0]] = fields[1:]
    return names


def read_templates(root: Path) -> list[str]:
    """``templates.txt`` beside the data (one ``{}`` template per line); CLIP's ImageNet templates otherwise."""
    file = root / "templates.txt"
    if not file.is_file():
        return list(IMAGE_TEMPLATES)
    templates = []
    for line_no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "{}" not in line:
            raise DataError(f"{file}:{line_no}: template {line.strip()!r} has no '{{}}' for the class name")
        templates.append(line.strip())
    if not templates:
        raise DataError(f"{file}: no templates")
    return templates


def class_names(root: Path, folders: list[str], humanised: list[str]) -> list[Any]:
    """Per class: its classnames.txt name (several: synonyms), else the humanised folder name."""
    given = read_classnames(root, folders)
    return [(given[f][0] if len(given[f]) == 1 else given[f]) if f in given else h
            for f, h in zip(folders, humanised)]
