"""Zero-shot playground: your own class names and prompt templates against a grid of images (notebook 03)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure

from ..evaluation.features import TextEncoder
from ..evaluation.plots import display_image
from ..evaluation.zero_shot import zero_shot_classifier, zero_shot_logits
from ._grid import image_grid, parse_lines, render_into


@dataclass
class Predictions:
    classes: list[str]
    probs: torch.Tensor  # (images, classes), softmax of CLIP-scaled cosine logits

    def top(self, i: int, k: int = 3) -> list[tuple[str, float]]:
        values, idx = self.probs[i].topk(min(k, len(self.classes)))
        return [(self.classes[j], float(v)) for v, j in zip(values, idx.tolist())]


@torch.no_grad()
def predict(encode_text: TextEncoder, image_features: torch.Tensor, classes: Sequence[str],
            templates: Sequence[str]) -> Predictions:
    """Prompt-ensemble zero-shot probabilities of every image over ``classes`` (the protocol of Table 1)."""
    classifier = zero_shot_classifier(encode_text, list(classes), list(templates))
    return Predictions(list(classes), zero_shot_logits(image_features, classifier).softmax(dim=-1))


class ZeroShotPlayground:
    """``images`` (normalised tensors) with their frozen ``features``; the user types classes and templates."""

    def __init__(self, images: Sequence[torch.Tensor], features: torch.Tensor, encode_text: TextEncoder,
                 classes: Sequence[str], templates: Sequence[str] = ("a photo of a {}.",),
                 truth: Sequence[str] | None = None, k: int = 3) -> None:
        self.images, self.features, self.encode_text, self.k = list(images), features, encode_text, k
        self.classes_text, self.templates_text = ", ".join(classes), "\n".join(templates)
        self.truth = list(truth) if truth is not None else None
        self.last: Predictions | None = None

    @classmethod
    def from_evaluator(cls, ev: Any, name: str, n_images: int = 8) -> ZeroShotPlayground:
        """One test image of each of up to ``n_images`` classes of set ``name`` (features from the evaluator's
        cache), their class names and the set's first template to start from."""
        data, feats = ev.features(name, "test")
        first: dict[int, int] = {}  # class -> its first test image
        for i, label in enumerate(feats.labels.tolist()):
            first.setdefault(label, i)
        pick = list(first.values())[:: max(1, len(first) // n_images)][:n_images]
        names = [c if isinstance(c, str) else c[0] for c in data.classes]
        truth = [names[int(feats.labels[i])] for i in pick]
        return cls([data.dataset[i][0] for i in pick], feats.features[pick], ev.encode_text, truth,
                   data.templates[:1], truth=truth)

    def run(self, classes_text: str | None = None, templates_text: str | None = None) -> Figure:
        """Classify with the typed names (comma or line separated) and templates (one per line) -> the grid."""
        self.classes_text = classes_text if classes_text is not None else self.classes_text
        self.templates_text = templates_text if templates_text is not None else self.templates_text
        classes, templates = parse_lines(self.classes_text), parse_lines(self.templates_text, "\n")
        if len(classes) < 2:
            raise ValueError("type at least two class names, separated by commas or new lines")
        self.last = predict(self.encode_text, self.features, classes, templates)
        titles = []
        for i in range(len(self.images)):
            lines = [f"{p:5.1%} {name[:22]}" for name, p in self.last.top(i, self.k)]
            titles.append("\n".join(([f"[{self.truth[i]}]"] if self.truth else []) + lines))
        return image_grid([display_image(t) for t in self.images], titles, cols=4)

    def widget(self) -> Any:
        import ipywidgets as widgets

        classes = widgets.Textarea(self.classes_text, description="classes", layout={"width": "60%"})
        templates = widgets.Textarea(self.templates_text, description="templates", layout={"width": "60%"})
        button, out = widgets.Button(description="classify"), widgets.Output()

        def update(_: Any = None) -> None:
            render_into(out, lambda: self.run(classes.value, templates.value), (ValueError,))

        button.on_click(update)
        self._update = update
        return widgets.VBox([classes, templates, button, out])

    def show(self) -> Any:
        """Build the widget and render the current names once (so the notebook has output without a browser)."""
        box = self.widget()
        self._update()
        return box
