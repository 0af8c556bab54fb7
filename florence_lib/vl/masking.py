"""BERT's masked language modelling input: 15% of the real tokens chosen, of those 80% -> [MASK], 10% -> a random
token, 10% unchanged; the loss is taken on the chosen tokens only (label -100 elsewhere, PyTorch's ignore index).

Special tokens ([CLS], [SEP], [PAD]) are never chosen. Where a short text draws no token at all, one real token
is chosen, so that every text contributes to the loss (METER's collator does not; with 8-token world questions
15% would leave a quarter of the rows without a target).
"""

from __future__ import annotations

import torch

IGNORE = -100


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: tuple[int, ...],
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masked input_ids, labels)``: labels hold the original id at chosen positions and ``IGNORE`` elsewhere."""
    if not 0.0 < probability <= 1.0:
        raise ValueError(f"probability: {probability} is outside (0, 1]")
    eligible = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device))
    u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    chosen = eligible & (u < probability)
    empty = eligible.any(1) & ~chosen.any(1)
    if empty.any():  # the eligible token with the smallest draw, so the choice stays uniform
        first = torch.where(eligible, u, torch.full_like(u, 2.0)).argmin(1)
        chosen[empty, first[empty]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    action = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    masked = input_ids.clone()
    masked[chosen & (action < 0.8)] = mask_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    masked[swap] = random_ids[swap]
    return masked, labels
