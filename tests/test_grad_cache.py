"""Gradient cache: the parameter gradients of one full-batch backward, with drop-path active, on 1 and 2 ranks."""

from __future__ import annotations

import contextlib

import pytest
import torch
from tiny_unicl import assert_close_grads, grads, tiny_batch, tiny_model

from florence_lib import distributed as D
from florence_lib.losses import unicl_loss
from florence_lib.training import grad_cache
from florence_lib.training.grad_cache import grad_cache_step, split_batch

CHUNK = 3  # 8 = 3 + 3 + 2: a ragged last chunk too


def gathered_unicl(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return unicl_loss(img, txt, labels, scale, **D.gather_features(img, txt, labels))


def full_backward(model: torch.nn.Module, batch: dict, chunk: int) -> tuple[float, dict[str, torch.Tensor]]:
    """The reference: forward in the same chunks (so drop-path draws the same masks) *with* a graph, one loss
    over the whole batch, one backward."""
    outs = [model(c["image"], c["input_ids"], c["attention_mask"]) for c in split_batch(batch, chunk)]
    img, txt = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
    loss = unicl_loss(img, txt, batch["label"], outs[0][2])
    loss.backward()
    return loss.item(), grads(model)


def test_split_batch_covers_the_batch_in_order() -> None:
    chunks = split_batch(tiny_batch(), CHUNK)
    assert [len(c["label"]) for c in chunks] == [3, 3, 2]
    assert torch.equal(torch.cat([c["input_ids"] for c in chunks]), tiny_batch()["input_ids"])


def test_equals_one_full_batch_backward_without_randomness() -> None:
    model, batch = tiny_model(), tiny_batch()
    ref_loss, ref = full_backward(model, batch, len(batch["label"]))  # literally one full-batch forward
    model.zero_grad()
    loss = grad_cache_step(model, batch, unicl_loss, chunk_size=CHUNK)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-6)
    assert_close_grads(grads(model), ref)


@pytest.fixture(scope="module")
def drop_path_reference() -> tuple[float, dict[str, torch.Tensor]]:
    model, batch = tiny_model(drop_path=0.5), tiny_batch()
    torch.manual_seed(7)
    return full_backward(model, batch, CHUNK)


def test_equals_full_batch_backward_with_drop_path(drop_path_reference: tuple) -> None:
    ref_loss, ref = drop_path_reference
    model, batch = tiny_model(drop_path=0.5), tiny_batch()
    torch.manual_seed(7)
    loss = grad_cache_step(model, batch, unicl_loss, chunk_size=CHUNK)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-6)
    assert_close_grads(grads(model), ref)


def test_without_rng_replay_the_masks_differ(drop_path_reference: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grad_cache.RngState, "replay", lambda self: contextlib.nullcontext())
    model, batch = tiny_model(drop_path=0.5), tiny_batch()
    torch.manual_seed(7)
    grad_cache_step(model, batch, unicl_loss, chunk_size=CHUNK)
    with pytest.raises(AssertionError, match="relative gradient error"):
        assert_close_grads(grads(model), drop_path_reference[1])


def test_backward_hook_receives_one_surrogate_per_chunk() -> None:
    model, batch = tiny_model(), tiny_batch()
    calls = []
    grad_cache_step(model, batch, unicl_loss, chunk_size=CHUNK, backward=lambda t: (calls.append(t), t.backward()))
    assert len(calls) == 3 and all(t.ndim == 0 for t in calls)


def two_rank_grad_cache() -> dict[str, torch.Tensor]:
    """Each rank caches its half in chunks of 2; the loss gathers across ranks; gradients averaged as DDP does."""
    model, batch = tiny_model(), tiny_batch()
    half = slice(D.rank() * 4, (D.rank() + 1) * 4)
    grad_cache_step(model, {k: v[half] for k, v in batch.items()}, gathered_unicl, chunk_size=2)
    g = grads(model)
    for t in g.values():
        torch.distributed.all_reduce(t)
        t /= D.world_size()
    return g


def test_two_ranks_equal_one_full_batch_backward() -> None:
    model, batch = tiny_model(), tiny_batch()
    _, ref = full_backward(model, batch, len(batch["label"]))
    for g in D.run_local(two_rank_grad_cache, world_size=2):
        assert_close_grads(g, ref)
