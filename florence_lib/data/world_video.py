"""Short clips of the embedded world: one object (the actor) performs an action while another may stand still.

Ten actions, each visible in the actor's box over time: moving left/right/up/down (the centre moves),
rotating (by half the shape's symmetry period, so the motion never completes a period and looks like none),
growing/shrinking (the area changes), changing colour (at the middle frame), appearing/disappearing (absent in
the first/last half). The distractor is dropped when it would overlap the actor's path, so actor boxes stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .world_render import (
    BACKGROUND_NAMES,
    COLOUR_NAMES,
    SHAPES,
    TEXTURES,
    Sprite,
    apply_domain,
    render_sprites,
)
from .world_text import article

if TYPE_CHECKING:
    from .world import World

ACTIONS = ("moving left", "moving right", "moving up", "moving down", "rotating", "growing", "shrinking",
           "changing colour", "appearing", "disappearing")
_PHRASES = ("moving to the left", "moving to the right", "moving up", "moving down", "rotating", "growing",
            "shrinking", "changing colour from {} to {}", "appearing", "disappearing")
_SYMMETRY = {"square": 90, "triangle": 120, "star": 72, "cross": 90, "diamond": 90, "hexagon": 60}


@dataclass
class Clip:
    """One rendered clip; ``boxes`` are the actor's xyxy boxes per frame (NaN where it is absent)."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    label: int
    action: str
    caption: str
    boxes: np.ndarray  # float32 [T, 4]
    domain: str


def render_clip(world: World, rng: np.random.Generator, heldout: bool, size: int, domain: str) -> Clip:
    """Draw a clip from ``rng``; ``heldout`` makes the actor one of the world's held-out combinations."""
    length = world.cfg.clip_length
    label = int(rng.integers(len(ACTIONS)))
    action = ACTIONS[label]
    shape, colour = world.sample_pair(rng, heldout)
    for _ in range(100):  # circles and rings look still when turning
        if action != "rotating" or SHAPES[shape] in _SYMMETRY:
            break
        shape, colour = world.sample_pair(rng, heldout)
    else:
        raise ValueError("heldout: no held-out combination has a shape that visibly rotates")
    texture = int(rng.integers(len(TEXTURES)))
    t = np.linspace(0.0, 1.0, length)
    cx = np.full(length, rng.uniform(0.3, 0.7))
    cy = np.full(length, rng.uniform(0.3, 0.7))
    radius = np.full(length, rng.uniform(0.11, 0.15))
    angle = np.zeros(length)
    colours = np.full(length, colour)
    visible = np.ones(length, dtype=bool)
    span = rng.uniform(0.35, 0.5)
    start = 0.5 + span / 2
    if action in ("moving left", "moving right"):
        cx = start - span * t if action == "moving left" else 1 - start + span * t
    elif action in ("moving up", "moving down"):
        cy = start - span * t if action == "moving up" else 1 - start + span * t
    elif action == "rotating":
        angle = _SYMMETRY[SHAPES[shape]] / 2 * t * (1 if rng.random() < 0.5 else -1)
    elif action in ("growing", "shrinking"):
        radius = 0.07 + 0.12 * (t if action == "growing" else 1 - t)
    elif action == "changing colour":
        others = [c for c in world.allowed_colours[shape] if c != colour]
        colours[length // 2:] = others[rng.integers(len(others))]
    elif action in ("appearing", "disappearing"):
        visible = (np.arange(length) >= length // 2) if action == "appearing" else (np.arange(length) < length // 2)

    bg, gradient = int(rng.integers(len(BACKGROUND_NAMES))), int(rng.integers(3))
    d_shape, d_colour = world.sample_pair(rng, False)
    d_cx, d_cy, d_r = rng.uniform(0.12, 0.88), rng.uniform(0.12, 0.88), 0.09
    clearance = np.hypot(cx - d_cx, cy - d_cy) - radius - d_r
    distractor = None if clearance.min() < 0.04 else Sprite(d_shape, d_colour, 0, d_cx * size, d_cy * size,
                                                           d_r * size)

    frames = np.empty((length, size, size, 3), dtype=np.uint8)
    boxes = np.full((length, 4), np.nan, dtype=np.float32)
    for k in range(length):
        sprites = [Sprite(shape, int(colours[k]), texture, cx[k] * size, cy[k] * size,
                          max(1.5, radius[k] * size), angle[k])] if visible[k] else []
        image, drawn = render_sprites(bg, gradient, size, sprites + ([distractor] if distractor else []))
        if visible[k]:
            boxes[k] = drawn[0]
        frames[k] = apply_domain(image, domain, rng)

    texture_word = "" if TEXTURES[texture] == "plain" else TEXTURES[texture] + " "
    if action == "changing colour":
        phrase = _PHRASES[label].format(COLOUR_NAMES[colour], COLOUR_NAMES[int(colours[-1])])
        caption = f"a {texture_word}{SHAPES[shape]} {phrase}"
    else:
        caption = f"{article(COLOUR_NAMES[colour])} {COLOUR_NAMES[colour]} {texture_word}{SHAPES[shape]} {_PHRASES[label]}"
    return Clip(frames, label, action, caption, boxes, domain)
