"""Frozen towers computed once: a fine-tuning step of the CPU preset then runs the fusion and the head only.

With ``freeze_image`` and ``text.freeze`` (the quick profile) the CoSwin stage map of an image and the text
tower's hidden states of a question never change during training, yet recomputing them is ~55% of a VQA step
of the tiny preset on one core (measured: CoSwin forward 17%, MiniLM forward 36% of a step of 32). Each
distinct image and each distinct question is encoded once, in eval mode (the frozen text tower's dropout off: a
fixed feature extractor), and the samples carry ``stage_map`` [C, H, W] and ``text_hidden`` [L, H] (its real
tokens only), which :class:`~florence_lib.vl.data.QuestionCollate` batches and METER reads instead of its towers.
"""

from __future__ import annotations

import torch

from ..data.tokenizer import Tokenizer
from ..models.meter import METER
from .data import ListDataset

CACHED_KEYS = ("stage_map", "text_hidden")


def frozen_towers(meter: METER) -> tuple[bool, bool]:
    """(image tower frozen, text tower frozen): which outputs may be cached."""
    return (not any(p.requires_grad for p in meter.image_encoder.parameters()),
            not any(p.requires_grad for p in meter.text_encoder.parameters()))


@torch.no_grad()
def cache_frozen_features(meter: METER, dataset: ListDataset, tokenizer: Tokenizer, device: torch.device,
                          batch_size: int = 64, blind: bool = False) -> ListDataset:
    """A copy of ``dataset`` whose samples also hold the frozen towers' outputs (none if neither is frozen).

    ``blind``: every image's map is the map of an all-zero image, as the question-only model sees."""
    image_frozen, text_frozen = frozen_towers(meter)
    samples = [dict(s) for s in dataset.samples]
    was_training = meter.training
    meter.eval()
    if image_frozen:
        images = list({id(s["image"]): s["image"] for s in samples}.items())  # scenes share their image tensor
        maps: dict[int, torch.Tensor] = {}
        if blind:  # every image is the zero image: one map, shared (same-size images)
            zero = meter.stage_map(torch.zeros_like(images[0][1])[None].to(device))[0].cpu()
            maps = {key: zero for key, img in images if img.shape == images[0][1].shape}
            images = [(key, img) for key, img in images if key not in maps]
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            pixels = torch.stack([img for _, img in chunk]).to(device)
            out = meter.stage_map(torch.zeros_like(pixels) if blind else pixels).cpu()
            maps |= {key: m for (key, _), m in zip(chunk, out, strict=True)}
        for s in samples:
            s["stage_map"] = maps[id(s["image"])]
    if text_frozen:
        questions = sorted({s["question"] for s in samples})
        hidden: dict[str, torch.Tensor] = {}
        for start in range(0, len(questions), batch_size):
            chunk = questions[start:start + batch_size]
            tokens = tokenizer(chunk)
            out = meter.text_hidden(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)).cpu()
            lengths = tokens["attention_mask"].sum(1).tolist()
            hidden |= {q: h[:n].clone() for q, h, n in zip(chunk, out, lengths, strict=True)}
        for s in samples:
            s["text_hidden"] = hidden[s["question"]]
    meter.train(was_training)
    return ListDataset(samples)


def pad_hidden(states: list[torch.Tensor], length: int) -> torch.Tensor:
    """[B, length, H] from per-sample [L_i, H] states (L_i <= length), zeros after each one's tokens."""
    out = states[0].new_zeros(len(states), length, states[0].shape[-1])
    for i, h in enumerate(states):
        out[i, :h.shape[0]] = h
    return out
