"""Zero-shot text-video retrieval (paper §3.9, Table 9): recall@K and median rank, with stable tie-breaking.

Each clip has one caption. A query's rank is the 0-based position of its positive in a *stable* descending
sort of its row, so tied scores rank in gallery order and a constant encoder scores chance, not perfection
(CLIP4Clip's metric code takes the first position whose score equals the positive's, which ranks every tie
first). Recall@K reuses :func:`florence_lib.evaluation.retrieval.retrieval_metrics` (the same stable rule,
counted instead of sorted); the median rank is read from the sorted ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.errors import collate_skip_none
from ..evaluation.retrieval import retrieval_metrics
from ..training.batches import trim_padding
from .model import VideoTextModel


def stable_ranks(similarity: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's positive column in a stable descending sort of the row."""
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices
    return (order == positives[:, None]).float().argmax(dim=1)


def text_video_metrics(similarity: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``similarity`` [clips, captions], caption ``i`` describing clip ``i``: t2v and v2t recall@K (fractions),
    median and mean rank (1-based, as papers report them)."""
    n = similarity.shape[0]
    if similarity.shape != (n, n):
        raise ValueError(f"similarity: expected a square [clips, captions] matrix, got {tuple(similarity.shape)}")
    recalls = retrieval_metrics(similarity, [[i] for i in range(n)], ks)
    out: dict[str, float] = {}
    for way, key, sim in (("t2v", "t2i", similarity.T), ("v2t", "i2t", similarity)):
        ranks = stable_ranks(sim, torch.arange(n)).float() + 1
        out.update({f"{way}_r{k}": recalls[f"{key}_r{k}"] for k in ks})
        out[f"{way}_median_rank"] = ranks.median().item()  # the lower middle for an even count
        out[f"{way}_mean_rank"] = ranks.mean().item()
    return out


@torch.no_grad()
def encode_clips(encode: Callable[[torch.Tensor], torch.Tensor], data: Dataset, batch_size: int,
                 device: torch.device | str) -> tuple[torch.Tensor, list[str]]:
    """Embeddings [N, D] of single-view clips (``video`` [1, C, T, H, W] per item) and their captions."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_skip_none)
    feats, captions = [], []
    for batch in tqdm(loader, desc="clips", leave=False):
        feats.append(encode(batch["video"][:, 0].to(device)).float().cpu())
        captions.extend(batch["caption"])
    return torch.cat(feats), captions


@torch.no_grad()
def encode_captions(model: VideoTextModel, tokenizer: Callable[[list[str]], dict[str, torch.Tensor]],
                    captions: list[str], batch_size: int, device: torch.device | str) -> torch.Tensor:
    out = []
    for i in range(0, len(captions), batch_size):
        tokens = trim_padding(tokenizer(captions[i:i + batch_size]))
        out.append(model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)).cpu())
    return torch.cat(out).float()


def zero_shot_video_retrieval(model: VideoTextModel, data: Dataset,
                              tokenizer: Callable[[list[str]], dict[str, torch.Tensor]], *,
                              ks: Sequence[int] = (1, 5, 10), batch_size: int = 16,
                              device: torch.device | str = "cpu") -> dict[str, Any]:
    """Both video encoders of ``model`` (inflated 3D, frame-mean baseline) against the clips' captions:
    ``{"inflated": metrics, "mean_pool": metrics, "similarity": {...}, "captions": [...]}``."""
    model.to(device).eval()
    inflated, captions = encode_clips(model.encode_video, data, batch_size, device)
    mean_pool, _ = encode_clips(model.encode_video_mean, data, batch_size, device)
    text = encode_captions(model, tokenizer, captions, batch_size, device)
    sims = {"inflated": inflated @ text.T, "mean_pool": mean_pool @ text.T}
    return {**{k: text_video_metrics(s, ks) for k, s in sims.items()}, "similarity": sims, "captions": captions}
