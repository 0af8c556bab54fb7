"""A grid of images with a caption under each: what every explorer draws."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def image_grid(images: Sequence[Any], titles: Sequence[str], cols: int = 4, size: float = 2.6,
               fontsize: int = 7) -> Figure:
    """``images`` (HxWx3 arrays or PIL images; None: an empty cell) with their ``titles``, ``cols`` per row."""
    n = max(len(images), 1)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, (size + 0.5) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        if image is not None:
            ax.imshow(np.asarray(image))
        ax.set_title(title, fontsize=fontsize, loc="left")
    fig.tight_layout()
    return fig


def parse_lines(text: str, separators: str = ",\n") -> list[str]:
    """Non-empty, stripped items of ``text`` split at any of ``separators``."""
    for sep in separators[1:]:
        text = text.replace(sep, separators[0])
    return [item.strip() for item in text.split(separators[0]) if item.strip()]


def render_into(out: Any, make: Callable[[], Any], errors: tuple[type[Exception], ...]) -> None:
    """Show ``make()`` in the ipywidgets ``Output`` ``out``, replacing what it held; one of ``errors`` (bad typed
    input) is printed there instead, any other error propagates."""
    from IPython.display import display

    out.clear_output(wait=True)
    with out:
        try:
            display(make())
            plt.close("all")
        except errors as exc:
            print(exc)
