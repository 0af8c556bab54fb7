"""Batches whose order is a pure function of (seed, phase, step): the data half of exact resume.

:class:`StepSampler` walks an endless sequence of epochs, each a permutation drawn from its own
``numpy.random.default_rng([seed, epoch])``, and starts at any step: a resumed run asks for step ``k`` and gets the
batch an uninterrupted run would have drawn at step ``k``. Each sample carries a seed derived from its position in
that sequence, and :class:`SeededSamples` draws the sample's augmentation under that seed (in a forked RNG), so
random crops are reproduced too, whichever worker process loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class StepSampler(Sampler[list[tuple[int, int]]]):
    """Endless batches of ``(index, sample_seed)`` starting at ``start_step``; epochs reshuffle, batches span them."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if num_samples < 1:
            raise ValueError("StepSampler needs at least one sample")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split over {world_size} ranks")
        self.num_samples, self.batch_size, self.seed, self.start_step = num_samples, batch_size, seed, start_step
        # Data parallel: every rank walks the same global batches and keeps its own contiguous slice.
        self.shard = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)

    def _epoch(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        position = self.start_step * self.batch_size  # index into the endless concatenation of epochs
        epoch, offset = divmod(position, self.num_samples)
        order = self._epoch(epoch)
        while True:
            batch = []
            while len(batch) < self.batch_size:
                if offset == self.num_samples:
                    epoch, offset = epoch + 1, 0
                    order = self._epoch(epoch)
                batch.append((int(order[offset]), self.seed * 1_000_003 + epoch * self.num_samples + offset))
                offset += 1
            yield batch[self.shard]


class SeededSamples(Dataset):
    """``dataset[index]`` drawn under the sample's own seed, leaving the caller's RNG state untouched."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU RNG alone: torch.manual_seed costs 0.6-6 ms
            return self.dataset[index]


def trim_padding(tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut the columns that are padding in every row: the world's captions fill ~20 of 77 positions, and the
    text tower's cost is linear-to-quadratic in the length. The result is unchanged (pads are masked out)."""
    length = int(tokens["attention_mask"].sum(dim=1).max())
    return {k: v[:, :length] for k, v in tokens.items()}


class PairCollate:
    """Stack images and labels, tokenize texts: ``{"image", "input_ids", "attention_mask", "label"}``.

    Samples with a hard-negative caption (``"negative"``, e.g. ``WorldPairs(hard_negatives=...)``) add
    ``"negative_input_ids"`` and ``"negative_attention_mask"``: one row per negative, in sample order, not aligned
    with the batch's rows (absent when no sample has one)."""

    def __init__(self, tokenizer: Callable[[list[str]], dict[str, torch.Tensor]]) -> None:
        self.tokenizer = tokenizer

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tokens = trim_padding(self.tokenizer([s["text"] for s in samples]))
        batch = {
            "image": torch.stack([s["image"] for s in samples]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "label": torch.as_tensor([int(s["label"]) for s in samples], dtype=torch.long),
        }
        negatives = [s["negative"] for s in samples if s.get("negative") is not None]
        if negatives:
            tokens = trim_padding(self.tokenizer(negatives))
            batch["negative_input_ids"], batch["negative_attention_mask"] = tokens["input_ids"], tokens["attention_mask"]
        return batch


def step_loader(dataset: Dataset, collate: Callable, *, batch_size: int, seed: int, start_step: int = 0,
                num_workers: int = 0, rank: int = 0, world_size: int = 1) -> DataLoader:
    """An endless DataLoader over ``dataset`` whose batch ``k`` depends only on (``seed``, ``start_step + k``).

    The loader gets its own generator so that creating its iterator draws nothing from the global torch RNG.
    With ``world_size`` ranks, ``batch_size`` is the global batch and each rank loads its contiguous slice.
    """
    sampler = StepSampler(len(dataset), batch_size, seed, start_step, rank, world_size)  # type: ignore[arg-type]
    return DataLoader(SeededSamples(dataset), batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=False)
