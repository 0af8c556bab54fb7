"""The official VQA evaluation (Antol et al. 2015; the VQA API's ``vqaEval.py``): answer normalisation and the
accuracy averaged over the ten leave-one-annotator-out subsets, ``min(1, matches / 3)`` each.

Normalisation, in the official order: newlines/tabs -> spaces, punctuation (removed where it touches a space or
where the text has a digit-comma-digit, else replaced by a space; periods removed unless part of a number),
lower case, number words -> digits, articles dropped, missing apostrophes restored ("dont" -> "don't").
As in the official code, the prediction gets the full normalisation and the ground-truth answers only the
punctuation step, and only when the annotators disagree.

With a single consensus answer per question (the VQAv2 subset in ``../shared/data``) every leave-one-out
subset is empty and the official formula gives 0; :func:`exact_match` is the score for such data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official look-behind typo, kept for identical numbers
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")


def strip_punctuation(text: str) -> str:
    out = text
    has_number_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        touches_space = p + " " in text or " " + p in text
        out = out.replace(p, "" if touches_space or has_number_comma else " ")
    return _PERIOD.sub("", out)


def digits_and_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """The official normalisation of a predicted answer."""
    return digits_and_articles(strip_punctuation(answer.replace("\n", " ").replace("\t", " ").strip()))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """One question's official accuracy: the mean over leave-one-annotator-out subsets of min(1, matches / 3)."""
    if not answers:
        raise ValueError("answers: a question needs at least one ground-truth answer")
    pred = normalize_answer(prediction)
    gts = [strip_punctuation(a) for a in answers] if len(set(answers)) > 1 else list(answers)
    scores = []
    for i in range(len(gts)):
        matches = sum(g == pred for j, g in enumerate(gts) if j != i)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)


def exact_match(prediction: str, answer: str) -> float:
    """1.0 if the normalised prediction equals the normalised (single, consensus) answer."""
    return float(normalize_answer(prediction) == normalize_answer(answer))
