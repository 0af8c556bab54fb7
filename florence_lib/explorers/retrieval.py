"""Retrieval browser: type a caption, see the top images; pick an image, see its top captions (notebook 07)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ..evaluation.features import TextEncoder
from ..evaluation.plots import display_image
from ._grid import image_grid, render_into


@torch.no_grad()
def search_images(query: str, encode_text: TextEncoder, image_features: torch.Tensor,
                  k: int = 8) -> list[tuple[int, float]]:
    """The ``k`` images closest to the text ``query`` (cosine), best first, as (index, similarity)."""
    if not query.strip():
        raise ValueError("type a caption to search for")
    text = F.normalize(encode_text([query.strip()]).float(), dim=-1)
    sims = (F.normalize(image_features.float(), dim=-1) @ text.T).squeeze(1)
    values, idx = sims.topk(min(k, len(sims)))
    return [(int(i), float(v)) for v, i in zip(values, idx)]


def image_captions(index: int, similarity: torch.Tensor, captions: Sequence[str],
                   image_to_captions: Sequence[Sequence[int]], k: int = 5) -> list[tuple[str, float, bool]]:
    """Image ``index``'s ``k`` best captions of the whole gallery: (caption, similarity, is one of its own)."""
    if not 0 <= index < similarity.shape[0]:
        raise IndexError(f"image {index}: the gallery has {similarity.shape[0]} images")
    values, idx = similarity[index].topk(min(k, similarity.shape[1]))
    own = set(image_to_captions[index])
    return [(captions[j], float(v), j in own) for v, j in zip(values, idx.tolist())]


class RetrievalBrowser:
    """A gallery (dataset of normalised image tensors, their features, captions) and a text encoder."""

    def __init__(self, dataset: Any, image_features: torch.Tensor, captions: Sequence[str],
                 image_to_captions: Sequence[Sequence[int]], encode_text: TextEncoder,
                 similarity: torch.Tensor | None = None, k: int = 8) -> None:
        self.dataset, self.features, self.captions = dataset, image_features, list(captions)
        self.image_to_captions, self.encode_text, self.k = image_to_captions, encode_text, k
        self.similarity = similarity if similarity is not None else self._similarity()

    @classmethod
    def from_evaluation(cls, details: dict[str, Any], encode_text: TextEncoder) -> RetrievalBrowser:
        """From the ``details`` of :meth:`Evaluator.retrieval` (its gallery, features and similarities)."""
        return cls(details["dataset"], details["image_features"], details["captions"],
                   details["image_to_captions"], encode_text, details["similarity"])

    def _similarity(self) -> torch.Tensor:
        from ..evaluation.features import text_features

        txt = F.normalize(text_features(self.encode_text, self.captions), dim=-1)
        return F.normalize(self.features.float(), dim=-1) @ txt.T

    def text_to_images(self, query: str) -> Figure:
        hits = search_images(query, self.encode_text, self.features, self.k)
        titles = [f"#{i}  {s:.3f}\n{self.captions[self.image_to_captions[i][0]][:34]}" for i, s in hits]
        return image_grid([display_image(self.dataset[i]) for i, _ in hits], titles, cols=4)

    def image_to_texts(self, index: int) -> Figure:
        lines = [f"{'✓' if own else '✗'} {s:.3f} {c[:60]}"
                 for c, s, own in image_captions(index, self.similarity, self.captions, self.image_to_captions)]
        return image_grid([display_image(self.dataset[index])], ["\n".join(lines)], cols=1, size=3.2)

    def widget(self, query: str = "") -> Any:
        import ipywidgets as widgets

        text = widgets.Text(query or self.captions[0], description="caption", layout={"width": "60%"})
        pick = widgets.BoundedIntText(0, min=0, max=len(self.features) - 1, description="image")
        out_text, out_image = widgets.Output(), widgets.Output()

        def on_text(_: Any = None) -> None:
            render_into(out_text, lambda: self.text_to_images(text.value), (ValueError, IndexError))

        def on_pick(_: Any = None) -> None:
            render_into(out_image, lambda: self.image_to_texts(int(pick.value)), (ValueError, IndexError))

        text.on_submit(on_text)
        pick.observe(on_pick, names="value")
        self._refresh = lambda: (on_text(), on_pick())
        return widgets.VBox([widgets.HTML("<b>text → images</b> (press enter)"), text, out_text,
                             widgets.HTML("<b>image → captions</b>"), pick, out_image])

    def show(self, query: str = "") -> Any:
        box = self.widget(query)
        self._refresh()
        return box
