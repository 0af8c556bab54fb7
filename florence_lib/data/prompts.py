"""CLIP-style prompt templates and the parser for CLIP's per-dataset prompt file.

Zero-shot classification turns each class name into sentences with templates ("a photo of a {}.") and averages
their text embeddings (prompt ensembling, CLIP sec. 3.1.4; Florence uses the same recipe). The built-in sets
are small on purpose: the seven templates CLIP found best for ImageNet, and templates that fit the embedded
world's renderings and clips. Real datasets get CLIP's own names and templates from
``<data_root>/meta/clip_prompts.md``, whose sections look like::

    ## EuroSAT
    ```bash
    classes = [
        'forest',
        ...
    ]
    templates = [
        'a centered satellite photo of {}.',
    ]
    ```

A class may list synonyms (``['happy', 'smiling']``); the first is its name.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
"""CLIP's seven best ImageNet templates (CLIP notebook 'Prompt_Engineering_for_ImageNet')."""

WORLD_TEMPLATES = (
    "a {}.",
    "a photo of a {}.",
    "a picture of a {} shape.",
    "a rendering of a {}.",
    "a drawing of a {}.",
    "a sketch of a {}.",
    "a {} on a background.",
    "a photo of the {} shape.",
)
"""Templates for the embedded world's class names ('red circle', or 'circle' when labelled by shape)."""

VIDEO_TEMPLATES = (
    "a video of a shape {}.",
    "a clip of an object {}.",
    "a shape {}.",
    "an animation of a shape {}.",
)
"""Templates for the world's clip actions ('moving left', 'rotating', ...)."""

CLIP_PROMPTS_FILE = Path("meta") / "clip_prompts.md"


@dataclass(frozen=True)
class DatasetPrompts:
    """One dataset's class names (first synonym), all synonyms per class, and templates with ``{}``."""

    name: str
    classes: list[str]
    synonyms: list[list[str]]
    templates: list[str]


def fill(templates: tuple[str, ...] | list[str], name: str) -> list[str]:
    """Every template with ``name`` in place of ``{}``."""
    return [t.replace("{}", name) for t in templates]


_SECTION = re.compile(r"^## (.+)$", re.M)
_LIST = re.compile(r"^(classes|templates) = (\[.*?^\])", re.M | re.S)


def parse_clip_prompts(text: str, source: str = "clip_prompts.md") -> dict[str, DatasetPrompts]:
    """Parse CLIP's prompt markdown into {dataset name: DatasetPrompts}; errors name the source and section."""
    out: dict[str, DatasetPrompts] = {}
    heads = list(_SECTION.finditer(text))
    for k, head in enumerate(heads):
        name = head.group(1).strip()
        body = text[head.end(): heads[k + 1].start() if k + 1 < len(heads) else len(text)]
        line = text.count("\n", 0, head.start()) + 1
        lists = {}
        for m in _LIST.finditer(body):
            try:
                lists[m.group(1)] = ast.literal_eval(m.group(2))
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"{source} line {line} ({name}): {m.group(1)} is not a Python list ({e})") from None
        if not lists:
            continue  # a prose section
        if set(lists) != {"classes", "templates"}:
            raise ValueError(f"{source} line {line} ({name}): expected both 'classes' and 'templates'")
        synonyms = [[c] if isinstance(c, str) else list(c) for c in lists["classes"]]
        templates = list(lists["templates"])
        if not synonyms or not all(s and all(isinstance(x, str) for x in s) for s in synonyms):
            raise ValueError(f"{source} line {line} ({name}): classes must be non-empty strings or lists of them")
        bad = [t for t in templates if not isinstance(t, str) or "{}" not in t]
        if not templates or bad:
            raise ValueError(f"{source} line {line} ({name}): every template needs a '{{}}', got {bad[:1]}")
        out[name] = DatasetPrompts(name, [s[0] for s in synonyms], synonyms, templates)
    return out


def load_clip_prompts(data_root: str | Path | None) -> dict[str, DatasetPrompts]:
    """CLIP's prompts for the real datasets, or {} when ``data_root`` is None or has no prompt file."""
    if data_root is None:
        return {}
    path = Path(data_root) / CLIP_PROMPTS_FILE
    if not path.is_file():
        return {}
    return parse_clip_prompts(path.read_text(encoding="utf-8"), source=str(path))
