"""Words of the embedded world: objects, their captions (short to long) and question/answer pairs.

Captions and answers are computed from the layout alone, never from pixels, so they are correct by
construction and can be produced for a whole split without rendering a single image.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .world_render import (
    BACKGROUND_NAMES,
    COLOUR_NAMES,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZE_NAMES,
    TEXTURES,
)

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RELATIONS = ("to the left of", "to the right of", "above", "below")


class WorldObject(NamedTuple):
    """An object of a scene: attribute indices, its 3x3 grid cell and its centre as a fraction of the side."""

    shape: int
    colour: int
    size: int
    texture: int
    cell: int
    cx: float
    cy: float

    @property
    def shape_name(self) -> str:
        return SHAPES[self.shape]

    @property
    def colour_name(self) -> str:
        return COLOUR_NAMES[self.colour]

    @property
    def size_name(self) -> str:
        return SIZE_NAMES[self.size]

    @property
    def texture_name(self) -> str:
        return TEXTURES[self.texture]

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    def describe(self, position: bool = False) -> str:
        """'a large red striped circle' (+ ' at the top left')."""
        texture = "" if self.texture_name == "plain" else self.texture_name + " "
        text = f"a {self.size_name} {self.colour_name} {texture}{self.shape_name}"  # sizes start with a consonant
        return text + (" " + POSITION_PHRASES[self.cell] if position else "")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def name(o: WorldObject) -> str:
    """'a red circle': the object's colour and shape, the class caption of a scene whose subject it is."""
    return f"{article(o.colour_name)} {o.colour_name} {o.shape_name}"


def captions(objects: tuple[WorldObject, ...], background: int, gradient: int) -> list[str]:
    """Six captions ordered from shortest to longest. The first, 'a red circle', names the subject
    (``objects[0]``, the large object) and is shared by many images; the others name every object."""
    return sorted(template_captions(objects, background, gradient), key=lambda t: len(t.split()))


def template_captions(objects: tuple[WorldObject, ...], background: int, gradient: int) -> list[str]:
    """The six captions of :func:`captions` in template order (``captions`` sorts them by length), so that the
    same template can render another object list (:func:`hard_negative`)."""
    main, others = objects[0], objects[1:]
    bg = BACKGROUND_NAMES[background] + (" gradient" if gradient else "")
    n = len(objects)
    if others:
        middle = [
            f"{name(main)} with " + _join([name(o) for o in others]),
            f"{main.describe()} with " + _join([o.describe() for o in others]),
            f"{main.describe(position=True)} with " + _join([o.describe(position=True) for o in others]),
        ]
    else:
        middle = [main.describe(), main.describe(position=True),
                  f"a single {main.describe()[2:]} {POSITION_PHRASES[main.cell]} on a {bg} background"]
    texts = [
        name(main),
        *middle,
        f"{NUMBER_WORDS[n]} shape{'s' if n > 1 else ''}: " + _join([o.describe() for o in objects]),
        _join([o.describe(position=True) for o in objects]) + f", on a {bg} background",
    ]
    return texts


# What each multi-object template says about every object (template order of ``template_captions``; template 0,
# 'a red circle', names the subject alone): the attributes a swap must change for the caption to turn false.
_NAMED = ("colour", "shape")
_DESCRIBED = ("size", "colour", "texture", "shape")
_TEMPLATE_FACTS = (None, _NAMED, _DESCRIBED, _DESCRIBED + ("cell",), _DESCRIBED, _DESCRIBED + ("cell",))
SWAPPED = ("colour", "shape", "cell")
"""Attributes :func:`hard_negative` swaps between two objects (``cell``, the position, where the caption names it)."""


def _facts(objects: tuple[WorldObject, ...], attributes: tuple[str, ...]) -> list[tuple[int, ...]]:
    return sorted(tuple(getattr(o, a) for a in attributes) for o in objects)


def _swap(objects: tuple[WorldObject, ...], i: int, j: int, attribute: str) -> tuple[WorldObject, ...]:
    fields = ("cell", "cx", "cy") if attribute == "cell" else (attribute,)
    out = list(objects)
    out[i] = objects[i]._replace(**{f: getattr(objects[j], f) for f in fields})
    out[j] = objects[j]._replace(**{f: getattr(objects[i], f) for f in fields})
    return tuple(out)


def hard_negative(objects: tuple[WorldObject, ...], background: int, gradient: int, text: str, u: float,
                  excluded: frozenset[tuple[int, int]] = frozenset()) -> str | None:
    """A caption of the scene made false by swapping one attribute between two objects (NegCLIP's swap,
    Yuksekgonul et al. 2023): 'a red circle with a blue square' -> 'a blue circle with a red square'.

    ``text`` is one of the scene's multi-object captions; the negative is rendered by its template, with the
    colours, shapes or (where the template names them) positions of two objects exchanged, so it names the same
    multiset of attribute words. Only swaps that change the multiset of what the template says about each object
    are drawn (``u`` in [0, 1) picks one uniformly), so the negative is never a true description of the scene,
    in any object order. ``excluded``: (shape, colour) pairs no object of the negative may have (the world's
    held-out combinations, which no train/val/test text names). None when ``text`` is no such caption (the
    subject's short caption, a one-object scene) or no allowed swap makes it false (e.g. two objects alike in
    every named attribute).
    """
    texts = template_captions(objects, background, gradient)
    if len(objects) < 2 or text not in texts[1:]:
        return None
    k = texts.index(text, 1)
    facts = _TEMPLATE_FACTS[k]
    assert facts is not None
    before = _facts(objects, facts)
    swaps = [(i, j, a) for a in SWAPPED if a in facts for i in range(len(objects)) for j in range(i + 1, len(objects))
             if _facts(_swap(objects, i, j, a), facts) != before
             and not any((o.shape, o.colour) in excluded for o in _swap(objects, i, j, a))]
    if not swaps:
        return None
    i, j, a = swaps[min(int(u * len(swaps)), len(swaps) - 1)]
    return template_captions(_swap(objects, i, j, a), background, gradient)[k]


def _twins(o: WorldObject, objects: tuple[WorldObject, ...]) -> int:
    """How many objects (``o`` included) share o's colour and shape."""
    return sum(p.colour == o.colour and p.shape == o.shape for p in objects)


def _refer(o: WorldObject, objects: tuple[WorldObject, ...]) -> str:
    """A referring expression that picks out ``o`` alone: its colour and shape, plus its place if needed."""
    place = "" if _twins(o, objects) == 1 else " " + POSITION_PHRASES[o.cell]
    return f"the {o.colour_name} {o.shape_name}{place}"


def _relation_holds(a: WorldObject, b: WorldObject, relation: int) -> bool:
    (ra, ca), (rb, cb) = divmod(a.cell, 3), divmod(b.cell, 3)
    return (ca < cb, ca > cb, ra < rb, ra > rb)[relation]


def questions(
    objects: tuple[WorldObject, ...], rng: np.random.Generator, nameable: tuple[tuple[int, int], ...]
) -> list[tuple[str, str]]:
    """Six (question, answer) pairs: counting, colour, shape, place, existence (yes/no) and a spatial relation.

    A 'no' existence question names only (shape, colour) pairs from ``nameable``, so a split without held-out
    combinations never mentions them, not even in its questions.
    """
    n = len(objects)
    u = rng.random(8).tolist()
    o = objects[int(u[0] * n)]
    qa = [
        ("how many shapes are there?", str(n)),
        (f"what colour is the {o.shape_name} {POSITION_PHRASES[o.cell]}?", o.colour_name),
    ]
    o = objects[int(u[1] * n)]
    qa.append((f"what shape is {POSITION_PHRASES[o.cell]}?", o.shape_name))
    unique = [p for p in objects if _twins(p, objects) == 1]
    if unique:
        o = unique[int(u[2] * len(unique))]
        qa.append((f"where is {_refer(o, objects)}?", o.position))
    else:
        o = objects[int(u[2] * n)]
        qa.append((f"how many {o.colour_name} {o.shape_name}s are there?", str(_twins(o, objects))))
    if u[3] < 0.5:
        o = objects[int(u[4] * n)]
        qa.append((f"is there {article(o.colour_name)} {o.colour_name} {o.shape_name}?", "yes"))
    else:
        present = {(p.shape, p.colour) for p in objects}
        k = int(u[4] * len(nameable))
        while nameable[k] in present:
            k = (k + 1) % len(nameable)
        s, c = nameable[k]
        qa.append((f"is there {article(COLOUR_NAMES[c])} {COLOUR_NAMES[c]} {SHAPES[s]}?", "no"))
    if n > 1:
        i = int(u[5] * n)
        j = (i + 1 + int(u[6] * (n - 1))) % n
        rel = int(u[7] * len(RELATIONS))
        a, b = objects[i], objects[j]
        answer = "yes" if _relation_holds(a, b, rel) else "no"
        qa.append((f"is {_refer(a, objects)} {RELATIONS[rel]} {_refer(b, objects)}?", answer))
    else:
        o = objects[0]
        qa.append((f"how many {o.colour_name} shapes are there?", "1"))
    return qa
