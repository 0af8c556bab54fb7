"""Pixels of the embedded world: the attribute vocabulary, object masks, backgrounds and rendering domains.

Everything here is a pure function of its arguments (and of a numpy Generator where noise is wanted), so a
scene renders the same bytes wherever and whenever it is drawn. Objects are drawn with PIL into a crop the
size of their bounding box and composited with numpy; per-size patterns are cached, so a 64 px scene costs a
few hundred microseconds on one core.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
COLOURS = {
    "red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (240, 220, 40), "green": (40, 170, 60),
    "cyan": (40, 200, 220), "blue": (40, 80, 220), "purple": (140, 50, 190), "pink": (245, 120, 190),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = {"small": 0.09, "large": 0.15}  # radius as a fraction of the image side
SIZE_NAMES = tuple(SIZES)
TEXTURES = ("plain", "striped", "dotted", "checkered")
BACKGROUNDS = {
    "white": (235, 235, 232), "gray": (128, 128, 128), "dark": (35, 35, 42), "beige": (214, 200, 170),
    "slate": (70, 86, 102),
}  # desaturated, so no background is mistaken for an object colour
BACKGROUND_NAMES = tuple(BACKGROUNDS)
POSITIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")
POSITION_PHRASES = (
    "at the top left", "at the top", "at the top right", "on the left", "in the centre", "on the right",
    "at the bottom left", "at the bottom", "at the bottom right",
)  # cell i of the 3x3 grid, row-major
DOMAINS = ("clean", "photo", "sketch", "thermal", "xray")

_RGB = list(COLOURS.values())
_SHADE_RGB = [tuple(int(0.45 * v) for v in rgb) for rgb in _RGB]  # second tone of textured objects


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    angles = [-math.pi / 2 + k * math.pi / points for k in range(2 * points)]
    return [((1.0 if k % 2 == 0 else inner) * math.cos(a), (1.0 if k % 2 == 0 else inner) * math.sin(a))
            for k, a in enumerate(angles)]


def _regular(n: int, start: float) -> list[tuple[float, float]]:
    return [(math.cos(start + 2 * math.pi * k / n), math.sin(start + 2 * math.pi * k / n)) for k in range(n)]


_W = 0.34  # half-width of the cross's arms
_UNIT_POLYGONS = {  # unit radius, y pointing down
    "square": [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)],
    "triangle": [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)],
    "star": _star(),
    "cross": [(-_W, -1), (_W, -1), (_W, -_W), (1, -_W), (1, _W), (_W, _W), (_W, 1), (-_W, 1), (-_W, _W),
              (-1, _W), (-1, -_W), (-_W, -_W)],
    "diamond": [(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)],
    "hexagon": _regular(6, 0.0),
}


class Sprite(NamedTuple):
    """One object to draw: attribute indices into the vocabularies above and a pose in pixels."""

    shape: int
    colour: int
    texture: int
    cx: float
    cy: float
    radius: float
    angle: float = 0.0  # degrees, counter-clockwise


@lru_cache(maxsize=64)
def texture_pattern(texture: int, size: int, extent: int | None = None) -> np.ndarray:
    """bool [extent, extent] (default [size, size]): True where a textured object of an image ``size`` pixels
    wide shows its main colour (all True for plain)."""
    extent = size if extent is None else extent
    yy, xx = np.mgrid[0:extent, 0:extent]
    name = TEXTURES[texture]
    if name == "plain":
        return np.ones((extent, extent), dtype=bool)
    period = _period(texture, size)
    if name == "striped":
        return ((xx + yy) % period) < (period + 1) // 2
    if name == "dotted":
        c = (period - 1) / 2
        return ((xx % period - c) ** 2 + (yy % period - c) ** 2) > (period / 3.2) ** 2
    half = period // 2  # checkered
    return ((xx // half + yy // half) % 2) == 0


def _period(texture: int, size: int) -> int:
    """The pattern repeats every this many pixels along x and y (so crops can be cached modulo it)."""
    name = TEXTURES[texture]
    if name == "striped":
        return max(3, size // 11)
    if name == "dotted":
        return max(3, size // 12)
    return 2 * max(2, size // 16)


@lru_cache(maxsize=4096)
def _shade_mask(texture: int, size: int, x0: int, y0: int, w: int, h: int) -> Image.Image:
    """'L' crop (w x h at x0, y0 modulo the period), 255 where a textured object shows its darker tone."""
    pattern = texture_pattern(texture, size, size + _period(texture, size))
    return Image.fromarray(np.where(pattern[y0:y0 + h, x0:x0 + w], 0, 255).astype(np.uint8))


@lru_cache(maxsize=16)
def _ramp(size: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, size, dtype=np.float32)


@lru_cache(maxsize=256)
def _background(colour: int, gradient: int, size: int) -> Image.Image:
    """A plain background (gradient 0) or a vertical (1) / horizontal (2) gradient; callers copy it."""
    base = np.array(BACKGROUNDS[BACKGROUND_NAMES[colour]], dtype=np.float32)
    ramp = _ramp(size)[:, None, None] if gradient == 1 else _ramp(size)[None, :, None]
    img = np.broadcast_to(base + GRADIENT_SWING * ramp * (gradient > 0), (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _draw_shape(draw: ImageDraw.ImageDraw, s: Sprite, dx: float, dy: float) -> None:
    cx, cy, r = s.cx - dx, s.cy - dy, s.radius
    name = SHAPES[s.shape]
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif name == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=max(1, round(0.4 * r)))
    else:
        t = math.radians(s.angle)
        c, n = r * math.cos(t), r * math.sin(t)  # rotate counter-clockwise on screen (y points down)
        draw.polygon([(cx + c * x + n * y, cy - n * x + c * y) for x, y in _UNIT_POLYGONS[name]], fill=255)


def render_sprites(
    colour: int, gradient: int, size: int, sprites: list[Sprite]
) -> tuple[np.ndarray, np.ndarray]:
    """A background with ``sprites`` drawn in order: uint8 [size, size, 3] and float32 [N, 4] xyxy boxes.

    Each sprite is drawn as a mask the size of its box and pasted with PIL (all in C); a box covers exactly
    the pixels the sprite drew (x2, y2 exclusive), so boxes match what a detector can see.
    """
    image = _background(colour, gradient, size).copy()
    boxes = np.zeros((len(sprites), 4), dtype=np.float32)
    for i, s in enumerate(sprites):
        x0, y0 = max(0, math.floor(s.cx - s.radius - 2)), max(0, math.floor(s.cy - s.radius - 2))
        x1, y1 = min(size, math.ceil(s.cx + s.radius + 2)), min(size, math.ceil(s.cy + s.radius + 2))
        if x1 <= x0 or y1 <= y0:
            continue
        mask = Image.new("L", (x1 - x0, y1 - y0))
        _draw_shape(ImageDraw.Draw(mask), s, x0, y0)
        bbox = mask.getbbox()
        if bbox is None:
            continue
        image.paste(_RGB[s.colour], (x0, y0), mask)
        if s.texture:
            period = _period(s.texture, size)
            shade = ImageChops.darker(mask, _shade_mask(s.texture, size, x0 % period, y0 % period, x1 - x0, y1 - y0))
            image.paste(_SHADE_RGB[s.colour], (x0, y0), shade)
        boxes[i] = (x0 + bbox[0], y0 + bbox[1], x0 + bbox[2], y0 + bbox[3])
    return np.asarray(image).copy(), boxes


LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # what sketch, thermal and x-ray keep of a colour
GRADIENT_SWING = 38.0  # a gradient background runs from base - this to base + this, per channel


def background_luminance(colour: int, gradient: int, x: float, y: float) -> float:
    """Luminance of background ``colour`` with ``gradient`` at (x, y), fractions of the side (as drawn)."""
    ramp = 0.0 if gradient == 0 else 2.0 * (y if gradient == 1 else x) - 1.0
    rgb = np.clip(np.array(BACKGROUNDS[BACKGROUND_NAMES[colour]], dtype=np.float32) + GRADIENT_SWING * ramp, 0, 255)
    return float(rgb @ LUMA)


def colour_luminance(colour: int) -> float:
    """Luminance of object colour ``colour`` (its main tone)."""
    return float(np.array(_RGB[colour], dtype=np.float32) @ LUMA)


# ----------------------------------------------------------------------------------------------- domains
LUMINANCE_DOMAINS = ("sketch", "thermal", "xray")


def _gray(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ LUMA


@lru_cache(maxsize=1)
def _thermal_lut() -> np.ndarray:
    """A black -> purple -> red -> yellow -> white colour map, like a thermal camera's."""
    stops = np.array([0, 64, 128, 192, 255], dtype=np.float32)
    rgb = np.array([[0, 0, 0], [90, 10, 130], [220, 40, 40], [250, 200, 40], [255, 255, 255]], dtype=np.float32)
    x = np.arange(256, dtype=np.float32)
    return np.stack([np.interp(x, stops, rgb[:, c]) for c in range(3)], -1).astype(np.uint8)


def _blur(image: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def apply_domain(image: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
    """Re-render a clean image in another domain (same layout, different pixel statistics)."""
    if domain == "clean":
        return image
    size = image.shape[0]
    if domain == "photo":  # uneven lighting, lens blur, sensor noise
        light = 1.0 + rng.uniform(-0.3, 0.3) * _ramp(size)[:, None] + rng.uniform(-0.3, 0.3) * _ramp(size)[None, :]
        img = _blur(image, 0.5 + size / 128).astype(np.float32) * light[..., None] * rng.uniform(0.75, 1.15)
        img += rng.normal(0.0, 7.0, img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)
    if domain == "sketch":  # dark strokes on paper where the luminance changes
        g = _gray(image)
        edges = np.zeros_like(g)
        edges[:, 1:] += np.abs(np.diff(g, axis=1))
        edges[1:, :] += np.abs(np.diff(g, axis=0))
        ink = 250.0 - np.clip(edges * 3.0, 0, 230)
        return np.clip(ink[..., None] * np.array([1.0, 0.98, 0.93], dtype=np.float32), 0, 255).astype(np.uint8)
    if domain == "thermal":
        g = np.clip(_gray(_blur(image, 0.4 + size / 96)), 0, 255).astype(np.uint8)
        return _thermal_lut()[g]
    if domain == "xray":  # inverted, soft, bluish
        g = 255.0 - _gray(_blur(image, 0.3 + size / 128))
        return np.clip(g[..., None] * np.array([0.86, 0.93, 1.0], dtype=np.float32), 0, 255).astype(np.uint8)
    raise ValueError(f"domain: {domain!r} is not one of {', '.join(DOMAINS)}")
