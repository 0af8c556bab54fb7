"""Image-text retrieval recall (paper §3.5, Table 5), with several captions per image as in COCO/Flickr30K.

Image -> text: an image counts as found at K when any of its captions ranks in the top K texts.
Text -> image: a caption counts as found at K when its image ranks in the top K images.
Ties are broken by index (a stable sort), so a constant encoder cannot look perfect. Small galleries use the
exact similarity matrix; large ones search a faiss inner-product index (also exact, ``IndexFlatIP``) for the
top max(K) neighbours only, so the ``N x M`` matrix is never held in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F


def text_to_image_index(image_to_captions: Sequence[Sequence[int]],
                        num_texts: int | None = None) -> torch.Tensor:
    """Invert ``image_to_captions`` (image i -> its caption indices) into caption -> image ``(M,)``."""
    num_texts = num_texts if num_texts is not None else sum(len(c) for c in image_to_captions)
    owner = torch.full((num_texts,), -1, dtype=torch.long)
    for i, caps in enumerate(image_to_captions):
        if len(caps) == 0:
            raise ValueError(f"image {i} has no captions")
        caps_t = torch.as_tensor(list(caps), dtype=torch.long)
        if (owner[caps_t] >= 0).any():
            raise ValueError(f"image {i}: caption {int(caps_t[owner[caps_t] >= 0][0])} belongs to two images")
        owner[caps_t] = i
    if (owner < 0).any():
        raise ValueError(f"caption {int((owner < 0).nonzero()[0])} belongs to no image")
    return owner


def _recalls(i2t_rank: torch.Tensor, t2i_rank: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    out = {f"{name}_r{k}": (rank < k).float().mean().item()
           for name, rank in (("i2t", i2t_rank), ("t2i", t2i_rank)) for k in ks}
    out["rsum"] = 100 * sum(out.values())
    return out


def _first_positive_rank(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Per row, the 0-based position of its best positive in a stable descending sort of the row, counted
    rather than sorted: (# scores above it) + (# equal scores at smaller indices)."""
    best = scores.masked_fill(~positive, float("-inf")).max(dim=1, keepdim=True).values
    first = (positive & (scores == best)).float().argmax(dim=1, keepdim=True)
    before = torch.arange(scores.shape[1])[None, :] < first
    return ((scores > best) | ((scores == best) & before)).sum(dim=1)


def retrieval_metrics(similarity: torch.Tensor, image_to_captions: Sequence[Sequence[int]],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K both ways from an ``(images, texts)`` similarity matrix; ``rsum`` is their sum (in %)."""
    n_img, n_txt = similarity.shape
    owner = text_to_image_index(image_to_captions, n_txt)
    if int(owner.max()) >= n_img:
        raise ValueError(f"captions refer to image {int(owner.max())} but there are {n_img} images")
    i2t_rank = _first_positive_rank(similarity, owner[None, :] == torch.arange(n_img)[:, None])
    t2i_rank = _first_positive_rank(similarity.T, owner[:, None] == torch.arange(n_img)[None, :])
    return _recalls(i2t_rank, t2i_rank, ks)


def _faiss_topk(gallery: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery.numpy(), dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(queries.numpy(), dtype=np.float32), k)
    return torch.from_numpy(idx).long()


def retrieval_eval(image_features: torch.Tensor, text_features: torch.Tensor,
                   image_to_captions: Sequence[Sequence[int]], ks: Sequence[int] = (1, 5, 10),
                   max_exact: int = 50_000_000) -> dict[str, float]:
    """Recall@K from features (L2-normalised here); faiss top-K search once images x texts > ``max_exact``."""
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    if img.shape[0] * txt.shape[0] <= max_exact:
        return retrieval_metrics(img @ txt.T, image_to_captions, ks)
    owner = text_to_image_index(image_to_captions, txt.shape[0])
    kmax = max(ks)
    hits_i2t = owner[_faiss_topk(txt, img, min(kmax, txt.shape[0]))] == torch.arange(img.shape[0])[:, None]
    hits_t2i = _faiss_topk(img, txt, min(kmax, img.shape[0])) == owner[:, None]
    miss = torch.tensor(kmax)  # "not in the top max(K)": a rank no K counts
    i2t_rank = torch.where(hits_i2t.any(1), hits_i2t.float().argmax(1), miss)
    t2i_rank = torch.where(hits_t2i.any(1), hits_t2i.float().argmax(1), miss)
    return _recalls(i2t_rank, t2i_rank, ks)
