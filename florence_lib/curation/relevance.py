"""Stage 5: image-text relevance. A scorer maps (images, captions) to one similarity per pair; pairs below
a threshold are dropped. The pipeline only needs the callable, so tests use a fake one and the model stack is
imported only when a checkpoint is actually given."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

Scorer = Callable[[Sequence[Image.Image], Sequence[str]], np.ndarray]
"""``scorer(images, captions) -> (N,)`` similarities, one per pair."""


class UniCLScorer:
    """Cosine similarity between a UniCL model's image and text embeddings of each pair."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable[[list[str]], dict[str, torch.Tensor]],
                 transform: Callable[[Image.Image], torch.Tensor], device: str | torch.device = "cpu",
                 batch_size: int = 64):
        self.model, self.tokenizer, self.transform = model.eval().to(device), tokenizer, transform
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image], captions: Sequence[str]) -> np.ndarray:
        scores = []
        for i in range(0, len(images), self.batch_size):
            x = torch.stack([self.transform(im) for im in images[i:i + self.batch_size]]).to(self.device)
            tokens = self.tokenizer(list(captions[i:i + self.batch_size]))
            img = self.model.encode_image(x, normalize=True)
            txt = self.model.encode_text(tokens["input_ids"].to(self.device),
                                         tokens["attention_mask"].to(self.device), normalize=True)
            scores.append((img * txt).sum(-1).float().cpu())
        return torch.cat(scores).numpy() if scores else np.empty(0, np.float32)

    @classmethod
    def from_checkpoint(cls, path: str | Path, image_size: int, device: str | torch.device = "cpu",
                        **kwargs: Any) -> UniCLScorer:
        """The scorer of a saved UniCL checkpoint (imports the model stack lazily: curation without this
        stage must not pay for it)."""
        from ..data.tokenizer import Tokenizer
        from ..data.transforms import eval_transform
        from ..training.checkpoint import load_checkpoint

        model, _ = load_checkpoint(path, device)
        return cls(model, Tokenizer(), eval_transform(image_size), device, **kwargs)
