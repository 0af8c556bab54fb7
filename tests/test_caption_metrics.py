"""BLEU-4 and CIDEr-D: the port gives pycocoevalcap 1.2's numbers (computed with it on these examples, on the
same whitespace tokens) and behaves as the definitions say on hand-checked cases."""

from __future__ import annotations

import pytest

from florence_lib.vl.caption_metrics import bleu, cider_d, tokenize

REFS = {1: ["a red circle at the top left", "a red circle", "one red circle on a grey background"],
        2: ["two shapes a blue star and a green ring", "a blue star left of a green ring"],
        3: ["a yellow square", "a small yellow square in the centre"],
        4: ["a purple triangle below a pink cross", "two shapes"]}
CANDS = {1: ["a red circle at the top"], 2: ["a blue star and a green ring"], 3: ["a yellow square in the centre"],
         4: ["a pink cross"]}
REFS2 = {"a": ["the cat sat on the mat", "there is a cat on the mat"],
         "b": ["a dog runs in the park", "the dog is running"], "c": ["people walk down a busy street"]}
CANDS2 = {"a": ["the cat is on the mat"], "b": ["a dog"], "c": ["a man rides a horse"]}


def test_matches_pycocoevalcap() -> None:
    assert bleu(CANDS, REFS) == pytest.approx([0.913100716199253, 0.9131007161946414, 0.913100716188273,
                                               0.8893635184215456], rel=1e-9)
    assert cider_d(CANDS, REFS)[0] == pytest.approx(4.590654978608282, rel=1e-9)
    assert bleu(CANDS2, REFS2) == pytest.approx([0.5496387630201759, 0.417789740180175, 0.2705194936693772,
                                                 4.21066773452979e-05], rel=1e-6)
    score, per_image = cider_d(CANDS2, REFS2)
    assert score == pytest.approx(1.871014558582792, rel=1e-9)
    assert per_image == pytest.approx({"a": 3.8888663, "b": 1.72417738, "c": 0.0}, rel=1e-6)


def test_hand_checked_bleu() -> None:
    refs = {0: ["the cat sat on the mat"]}
    assert bleu({0: ["the cat sat on the mat"]}, refs)[3] == pytest.approx(1.0)
    # 4 of 6 words, all n-grams right: precision 1, brevity penalty exp(1 - 6/4)
    assert bleu({0: ["the cat sat on"]}, refs)[3] == pytest.approx(0.6065306597, rel=1e-6)
    assert bleu({0: ["dogs bark loudly here"]}, refs)[3] < 1e-6


def test_hand_checked_cider() -> None:
    refs = {0: ["a red circle"], 1: ["a blue star"]}
    perfect, _ = cider_d({0: ["a red circle"], 1: ["a blue star"]}, refs)
    swapped, _ = cider_d({0: ["a blue star"], 1: ["a red circle"]}, refs)
    # every n-gram but "a" has idf log(2); "a" is in both images (idf 0): exact matches score 10 per n-gram order
    # that has weight, i.e. (1 + 1 + 1 + 0) / 4 * 10 with no 4-grams in a 3-word caption
    assert perfect == pytest.approx(7.5)
    assert swapped == pytest.approx(0.0)


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="same image ids"):
        bleu({0: ["a"]}, {1: ["a"]})
    with pytest.raises(ValueError, match="exactly one candidate"):
        cider_d({0: ["a", "b"]}, {0: ["a"]})
    assert tokenize("A Red, circle.") == "a red circle"
