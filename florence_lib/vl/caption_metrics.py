"""BLEU-4 and CIDEr-D as the COCO caption evaluation (``pycocoevalcap``) computes them, on tokenised text.

A port, not a dependency: pycocoevalcap ships 100 MB of Java (tokenizer, METEOR, SPICE) to compute two
scores that are a page of Python each. Tests check that the port gives pycocoevalcap 1.2's numbers on fixed
examples. Inputs are ``{image_id: [caption]}`` (one candidate) and ``{image_id: [references]}``; texts are
lower-cased and split on whitespace after stripping punctuation (:func:`tokenize`, a stand-in for the PTB
tokenizer, which only matters for punctuation).

- BLEU (Papineni et al. 2002), coco-caption's variant: corpus-level clipped n-gram precisions, the
  "closest" reference length for the brevity penalty, and its tiny smoothing constants.
- CIDEr-D (Vedantam et al. 2015): tf-idf n-gram vectors (n = 1..4, idf over the evaluated set's references),
  clipped cosine similarity with a Gaussian length penalty (sigma 6), averaged over references and n, x10.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

_PUNCT = re.compile(r"[^\w\s']")


def tokenize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def ngrams(words: Sequence[str], n: int = 4) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _check(candidates: Mapping, references: Mapping) -> list:
    if set(candidates) != set(references):
        raise ValueError("candidates and references must have the same image ids")
    for key, cands in candidates.items():
        if len(cands) != 1 or not references[key]:
            raise ValueError(f"image {key!r}: need exactly one candidate and at least one reference")
    return sorted(candidates, key=str)


def bleu(candidates: Mapping[object, Sequence[str]], references: Mapping[object, Sequence[str]], n: int = 4
         ) -> list[float]:
    """Corpus BLEU-1..n (coco-caption's ``Bleu(4)``); ``bleu(...)[3]`` is BLEU-4."""
    tiny, small = 1e-15, 1e-9
    correct, guess = [0] * n, [0] * n
    test_len = ref_len = 0
    for key in _check(candidates, references):
        words = candidates[key][0].split()
        refs = [r.split() for r in references[key]]
        max_ref: Counter = Counter()
        for r in refs:
            max_ref |= ngrams(r, n)
        for gram, count in ngrams(words, n).items():
            correct[len(gram) - 1] += min(count, max_ref[gram])
        for k in range(n):
            guess[k] += max(len(words) - k, 0)
        test_len += len(words)
        ref_len += min((abs(len(r) - len(words)), len(r)) for r in refs)[1]
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def cider_d(candidates: Mapping[object, Sequence[str]], references: Mapping[object, Sequence[str]], n: int = 4,
            sigma: float = 6.0) -> tuple[float, dict[object, float]]:
    """(corpus CIDEr-D, per-image scores), as coco-caption's ``Cider()``."""
    keys = _check(candidates, references)
    refs = {k: [ngrams(r.split(), n) for r in references[k]] for k in keys}
    doc_freq: Counter = Counter()
    for k in keys:
        doc_freq.update({g for r in refs[k] for g in r})
    log_images = math.log(len(keys))

    def vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [defaultdict(float) for _ in range(n)]
        norms, length = [0.0] * n, 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            vec[k][gram] = tf * (log_images - math.log(max(1.0, doc_freq[gram])))
            norms[k] += vec[k][gram] ** 2
            if k == 1:  # sic: coco-caption measures length in bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norms], length

    def similarity(hyp: tuple, ref: tuple) -> list[float]:
        (vh, nh, lh), (vr, nr, lr) = hyp, ref
        penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
        out = []
        for k in range(n):
            value = sum(min(w, vr[k][g]) * vr[k][g] for g, w in vh[k].items())
            if nh[k] != 0 and nr[k] != 0:
                value /= nh[k] * nr[k]
            out.append(value * penalty)
        return out

    per_image = {}
    for k in keys:
        hyp = vector(ngrams(candidates[k][0].split(), n))
        sims = [similarity(hyp, vector(r)) for r in refs[k]]
        per_image[k] = 10.0 * sum(sum(s) / n for s in sims) / len(sims)
    return sum(per_image.values()) / len(per_image), per_image
