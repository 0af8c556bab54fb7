"""Per-pair filters of stages 1-2 and 4: image validity, caption repair, length, language and boilerplate.

Each check is a pure function returning the drop reason (or None), so the pipeline and the notebook apply the
same rule and a test can pin each one down.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import ftfy
import numpy as np
from PIL import Image

_WORD = re.compile(r"\w+", re.UNICODE)
_SPACE = re.compile(r"\s+")
_URL = re.compile(r"^(?:https?://|www\.)\S+$", re.IGNORECASE)
_FILENAME = re.compile(r"^[\w\-. ()]+\.(?:jpe?g|png|gif|bmp|webp|tiff?|heic|svg)$", re.IGNORECASE)
_CAMERA = re.compile(r"^(?:img|dsc|dscn|dscf|dcim|pxl|mvimg|photo|image|screenshot|scan)[\s_\-]*\d+", re.IGNORECASE)
_SPAM = re.compile(r"\b(?:buy now|click here|free shipping|order now|best price|discount code|subscribe now|"
                   r"limited offer|visit our (?:shop|store|website))\b", re.IGNORECASE)
PLACEHOLDERS = frozenset({
    "image", "images", "photo", "photos", "picture", "pic", "img", "untitled", "untitled image", "no title",
    "no description", "description", "caption", "null", "none", "n a", "na", "placeholder", "default",
    "thumbnail", "stock photo", "image not found", "image unavailable", "no image", "test", "title",
})
"""Caption keys (see :func:`caption_key`) that describe nothing."""


def normalize_caption(text: str) -> str:
    """Repair mojibake and HTML entities (ftfy), compose Unicode (NFC) and collapse whitespace."""
    text = ftfy.fix_text(text)
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def caption_key(text: str) -> str:
    """The text hash table's key: case-folded, punctuation removed, whitespace collapsed (paper §2.2)."""
    text = "".join(" " if unicodedata.category(c).startswith(("P", "S")) else c for c in text.casefold())
    return _SPACE.sub(" ", text).strip()


def count_tokens(text: str) -> int:
    """Word tokens (runs of letters/digits); a language-independent length that needs no vocabulary."""
    return len(_WORD.findall(text))


def is_boilerplate(text: str) -> bool:
    """True for captions that describe nothing: URLs, file and camera names, placeholders, spam, no letters."""
    key = caption_key(text)
    return bool(
        _URL.match(text) or _FILENAME.match(text) or _CAMERA.match(text) or _SPAM.search(text)
        or key in PLACEHOLDERS or not any(c.isalpha() for c in key)
    )


def image_reason(image: Image.Image, min_side: int, max_aspect: float) -> str | None:
    """``too_small`` / ``aspect`` / None for a decoded image."""
    w, h = image.size
    if min(w, h) < min_side:
        return "too_small"
    if max(w, h) / min(w, h) > max_aspect:
        return "aspect"
    return None


@lru_cache(maxsize=1)
def _identifier():  # langid's model takes seconds to load: once per process, and only when asked for
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=False)


def language_codes() -> tuple[str, ...]:
    """The ISO 639-1 codes langid knows."""
    return tuple(_identifier().nb_classes)


def identify_language(text: str, languages: Sequence[str]) -> tuple[str, float]:
    """``(most likely language, its log-likelihood margin in nats over the best of languages)``.

    langid's normalised probabilities saturate on short captions ('a large blue striped star' is 0.91
    Spanish), so the decision uses the log-likelihood ratio, which grows with the evidence a caption carries.
    """
    ident = _identifier()
    fv = ident.instance2fv(text)
    nz = np.flatnonzero(fv)  # a caption hits a handful of the 7480 features: skip the dense product
    logp = fv[nz] @ ident.nb_ptc[nz] + ident.nb_pc
    best = int(logp.argmax())
    keep = [i for i, code in enumerate(ident.nb_classes) if code in languages]
    margin = float(logp[best] - logp[keep].max()) if keep else float("inf")
    return ident.nb_classes[best], margin


def language_reason(lang: str, margin: float, languages: Sequence[str], min_margin: float) -> str | None:
    """``language`` when the caption is in a language outside ``languages`` by at least ``min_margin`` nats."""
    if languages and lang not in languages and margin >= min_margin:
        return "language"
    return None
