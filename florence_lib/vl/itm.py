"""Image-text matching pairs: half the rows keep their image, the other half get another row's image whose text
differs from theirs (a negative must not describe the image: in the world, short captions repeat across images,
so "another row" is not enough). ``weights`` turns uniform in-batch negatives into hard negatives, e.g. a
softmax over UniCL image-text similarities (ALBEF/METER's hard negative mining)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def itm_negatives(
    texts: Sequence[str],
    *,
    generator: torch.Generator | None = None,
    fraction: float = 0.5,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image_index [B], is_match [B])``: row i is paired with image ``image_index[i]``; ``is_match`` is 1
    where that is its own image. A negative's text never equals the row's text; a row with no such partner in
    the batch stays a positive. ``weights`` [B, B] (any non-negative scores, e.g. exp(similarity)) picks
    negatives in proportion."""
    b = len(texts)
    ids = {t: k for k, t in enumerate(dict.fromkeys(texts))}
    key = torch.tensor([ids[t] for t in texts])
    allowed = key[:, None] != key[None, :]
    probs = allowed.float() if weights is None else weights.detach().float().cpu().clamp(min=0) * allowed
    probs = torch.where(allowed & (probs.sum(1, keepdim=True) == 0), allowed.float(), probs)
    want = torch.rand(b, generator=generator) < fraction
    can = probs.sum(1) > 0
    negative = want & can
    index = torch.arange(b)
    if negative.any():
        index[negative] = torch.multinomial(probs[negative], 1, generator=generator).squeeze(1)
    return index, (~negative).long()
