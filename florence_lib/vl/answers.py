"""VQA answers as classification targets: the answer vocabulary and METER's soft scores.

A question's target is a vector over the vocabulary: an answer given by 0/1/2/3/4+ of its annotators scores
0/0.3/0.6/0.9/1.0 (METER's and the VQA accuracy's step function), trained with BCE. A question with one
answer and no annotators (the world, the consensus VQAv2 subset) is certain: that answer scores 1.0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from .vqa_metrics import normalize_answer

SCORE_BY_COUNT = (0.0, 0.3, 0.6, 0.9, 1.0)
VQAV2_VOCAB_SIZE = 3129  # METER's / ViLT's answer vocabulary for VQAv2


def soft_score(count: int) -> float:
    return SCORE_BY_COUNT[min(count, 4)]


def build_answer_vocab(answers_per_question: Iterable[Sequence[str]], top_k: int = VQAV2_VOCAB_SIZE,
                       min_count: int = 1) -> list[str]:
    """The ``top_k`` most frequent normalised answers seen at least ``min_count`` times (counting each answer
    once per question), most frequent first, ties alphabetical."""
    counts: Counter[str] = Counter()
    for answers in answers_per_question:
        counts.update({normalize_answer(a) for a in answers})
    ranked = sorted((a for a, c in counts.items() if c >= min_count and a), key=lambda a: (-counts[a], a))
    return ranked[:top_k]


def soft_targets(answers_per_question: Sequence[Sequence[str]], vocab: Sequence[str],
                 single_is_certain: bool = True) -> torch.Tensor:
    """[Q, len(vocab)] targets; answers outside the vocabulary are dropped (METER does the same)."""
    index = {a: i for i, a in enumerate(vocab)}
    targets = torch.zeros(len(answers_per_question), len(vocab))
    for q, answers in enumerate(answers_per_question):
        counts = Counter(normalize_answer(a) for a in answers)
        for answer, count in counts.items():
            if answer in index:
                certain = single_is_certain and len(answers) == 1
                targets[q, index[answer]] = 1.0 if certain else soft_score(count)
    return targets
