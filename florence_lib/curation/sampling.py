"""Stage 8: balance by capping how many pairs one query (label) or one source contributes, as CLIP and
DALL-E did to keep a few very frequent queries and sites from dominating the data. Seeded and order-free."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def cap_groups(groups: Sequence[Hashable], cap: int, priority: np.ndarray) -> np.ndarray:
    """Boolean mask keeping, in each group, the ``cap`` members with the lowest ``priority`` (0: keep all)."""
    n = len(groups)
    if cap <= 0 or n == 0:
        return np.ones(n, dtype=bool)
    _, group = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    order = np.lexsort((priority, group))
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_group)) + 1]
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    keep = np.empty(n, dtype=bool)
    keep[order] = rank < cap
    return keep


def balance(labels: Sequence[int], sources: Sequence[str], max_per_query: int, max_per_source: int,
            seed: int) -> np.ndarray:
    """Mask of the pairs kept after the per-query cap, then the per-source cap, drawing at random (``seed``)."""
    priority = np.random.default_rng(seed).permutation(len(labels))
    keep = cap_groups(labels, max_per_query, priority)
    idx = np.flatnonzero(keep)
    keep[idx] = cap_groups([sources[i] for i in idx], max_per_source, priority[idx])
    return keep
