"""Gradient cache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup").

A contrastive loss couples every pair in the batch, so its batch cannot simply be split into accumulation steps:
the negatives would shrink with it. The gradient cache keeps the batch and bounds memory by one chunk:

1. forward every chunk through both towers without a graph, remembering each chunk's RNG state;
2. compute the loss on the cached (detached) representations and backpropagate to them only;
3. re-forward each chunk with a graph under its remembered RNG state, so dropout and drop-path draw the same
   masks, and backpropagate the cached representation gradients through it (``sum(rep * rep.grad)``).

The parameter gradients equal those of one backward of the loss over the whole batch (to float rounding;
``tests/test_grad_cache.py``), while activation memory is that of one chunk plus the representations. The price is a
second forward pass. The loss may gather features across ranks (``florence_lib.distributed.gather_features``);
step 2 then exchanges representation gradients and step 3 stays local.

The model is called as a whole -- ``model(images, input_ids, attention_mask) -> (image, text, logit scale)`` -- so
that a DeepSpeed engine (ZeRO-3 gathers weights in the forward hooks) can stand in for it; ``backward`` is where
such an engine plugs in its ``engine.backward`` (loss scaling, accumulation boundaries).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .engine import Engine

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(image_features, text_features, labels, logit_scale) -> scalar``"""


@dataclass
class RngState:
    """The generator states a forward pass draws from: the CPU one and, on CUDA, the device's."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this state, then put the generators back where they were."""
        with torch.random.fork_rng(devices=[self.device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def split_batch(batch: Mapping[str, Any], chunk_size: int) -> list[dict[str, Any]]:
    """The batch's tensors cut into consecutive chunks of ``chunk_size`` rows (the last may be shorter)."""
    n = len(batch["label"])
    return [{k: v[i:i + chunk_size] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            for i in range(0, n, chunk_size)]


def _forward(model: nn.Module, chunk: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return model(chunk["image"], chunk["input_ids"], chunk["attention_mask"])


def grad_cache_step(
    model: nn.Module,
    batch: Mapping[str, Any],
    loss_fn: LossFn,
    *,
    chunk_size: int,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """Accumulate the parameter gradients of ``loss_fn`` over ``batch`` into ``.grad``; return the (detached) loss.

    ``batch`` holds ``image``, ``input_ids``, ``attention_mask`` and ``label``; ``backward(surrogate)`` is called once
    per chunk (default: ``surrogate.backward()``); ``autocast()`` wraps every forward pass.
    """
    if "negative_input_ids" in batch:  # PretrainConfig.validate refuses the combination before a run starts
        raise ValueError("the gradient cache does not take hard negatives (data.hard_negatives > 0)")
    chunks = split_batch(batch, chunk_size)
    device = batch["image"].device
    states, images, texts = [], [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RngState.capture(device))
            with autocast():
                image, text, scale = _forward(model, chunk)
            images.append(image)
            texts.append(text)
    # The loss in fp32 on leaves: its backward stops at the representations and the temperature.
    image = torch.cat(images).float().requires_grad_()
    text = torch.cat(texts).float().requires_grad_()
    scale = scale.detach().float().requires_grad_()
    loss = loss_fn(image, text, batch["label"], scale)
    loss.backward()
    offset = 0
    for i, (chunk, state) in enumerate(zip(chunks, states)):
        n = len(chunk["label"])
        with state.replay(), autocast():
            chunk_image, chunk_text, chunk_scale = _forward(model, chunk)
        surrogate = ((chunk_image.float() * image.grad[offset:offset + n]).sum()
                     + (chunk_text.float() * text.grad[offset:offset + n]).sum())
        if i == len(chunks) - 1:  # the temperature's gradient, once, with the last chunk (an accumulation boundary)
            surrogate = surrogate + chunk_scale.float() * scale.grad
        backward(surrogate)
        offset += n
    return loss.detach()


class GradCacheEngine(Engine):
    """The plain engine with each contrastive batch forwarded in chunks of ``chunk_size`` through the cache."""

    def __init__(self, *args: Any, chunk_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunk_size = chunk_size

    def forward_backward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = grad_cache_step(self.model, batch, self.objective.features_loss, chunk_size=self.chunk_size,
                               autocast=self.autocast)
        return loss, {"logit_scale": self.model.temperature_scale().item()}
