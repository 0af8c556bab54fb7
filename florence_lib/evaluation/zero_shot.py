"""Zero-shot classification as CLIP runs it (paper §3.1, Table 1).

Every class name is put into every prompt template; the text embeddings of one class are L2-normalised,
averaged and normalised again (the prompt ensemble), giving one column of a ``(D, C)`` classifier. Images are
classified by cosine similarity against the columns. A class may have several names (CLIP's FER2013 does):
all names x all templates then go into its average.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .features import TextEncoder, text_features
from .metrics import classification_metrics

ClassNames = Sequence[str | Sequence[str]]


def _names(c: str | Sequence[str]) -> list[str]:
    return [c] if isinstance(c, str) else list(c)


def classifier_cache_path(cache_dir: str | Path, model_key: str, classnames: ClassNames,
                          templates: Sequence[str]) -> Path:
    """Where the classifier of (model, class names, templates) is cached; any change gives a new file."""
    blob = json.dumps([model_key, [_names(c) for c in classnames], list(templates)]).encode()
    return Path(cache_dir) / f"zeroshot_{hashlib.sha1(blob).hexdigest()[:16]}.safetensors"


@torch.no_grad()
def zero_shot_classifier(
    encode_text: TextEncoder,
    classnames: ClassNames,
    templates: Sequence[str],
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    model_key: str = "",
) -> torch.Tensor:
    """The ``(D, C)`` prompt-ensemble classifier; cached under ``cache_dir`` when given (keyed by
    ``model_key``, which must change with the weights, e.g. the checkpoint path and step)."""
    if not classnames or not templates:
        raise ValueError("zero-shot classifier needs at least one class name and one template")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"template {bad[0]!r} has no '{{}}' placeholder for the class name")
    cache = classifier_cache_path(cache_dir, model_key, classnames, templates) if cache_dir else None
    if cache is not None and cache.is_file():
        return load_file(cache)["classifier"]
    texts, owner = [], []
    for i, c in enumerate(classnames):
        for name in _names(c):
            texts += [t.format(name) for t in templates]
            owner += [i] * len(templates)
    emb = F.normalize(text_features(encode_text, texts, batch_size, desc="zero-shot prompts"), dim=-1)
    owner_t = torch.tensor(owner)
    sums = torch.zeros(len(classnames), emb.shape[1]).index_add_(0, owner_t, emb)
    classifier = F.normalize(sums / torch.bincount(owner_t)[:, None], dim=-1).T.contiguous()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({"classifier": classifier}, str(cache))
    return classifier


def zero_shot_logits(image_features: torch.Tensor, classifier: torch.Tensor,
                     scale: float = 100.0) -> torch.Tensor:
    """Cosine similarities (times CLIP's scale of 100, which changes no ranking) ``(N, C)``."""
    return scale * F.normalize(image_features.float(), dim=-1) @ classifier


def zero_shot_eval(image_features: torch.Tensor, labels: torch.Tensor,
                   classifier: torch.Tensor) -> dict[str, float]:
    """Top-1, top-5 and mean per-class recall of zero-shot predictions."""
    if image_features.shape[1] != classifier.shape[0]:
        raise ValueError(f"image features have dimension {image_features.shape[1]} but the classifier "
                         f"expects {classifier.shape[0]}")
    return classification_metrics(zero_shot_logits(image_features, classifier), labels)
