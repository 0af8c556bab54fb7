"""Rank helpers and the gather with gradients: 2 gloo ranks give the loss and gradients of one full-batch process."""

from __future__ import annotations

import pytest
import torch
from tiny_unicl import BATCH, assert_close_grads, grads, tiny_batch, tiny_model

from florence_lib import distributed as D
from florence_lib.losses import clip_loss, unicl_loss


@pytest.fixture(scope="module")
def full_batch() -> dict[str, tuple[float, dict[str, torch.Tensor]]]:
    """One process, the whole batch: each loss and its parameter gradients."""
    model, batch = tiny_model(), tiny_batch()
    img, txt, scale = model(batch["image"], batch["input_ids"], batch["attention_mask"])
    out = {}
    for name, loss in (("unicl", unicl_loss(img, txt, batch["label"], scale)), ("clip", clip_loss(img, txt, scale))):
        model.zero_grad()
        loss.backward(retain_graph=True)
        out[name] = (loss.item(), grads(model))
    return out


def data_parallel_step(loss_name: str) -> tuple[float, dict[str, torch.Tensor]]:
    """One rank's half of the batch, the gathered loss, gradients averaged over ranks as DDP/DeepSpeed do."""
    model, batch = tiny_model(), tiny_batch()
    half = slice(D.rank() * BATCH // 2, (D.rank() + 1) * BATCH // 2)
    local = {k: v[half] for k, v in batch.items()}
    img, txt, scale = model(local["image"], local["input_ids"], local["attention_mask"])
    if loss_name == "unicl":
        loss = unicl_loss(img, txt, local["label"], scale, **D.gather_features(img, txt, local["label"]))
    else:
        loss = clip_loss(img, txt, scale, first_index=D.rank() * len(img), **D.gather_features(img, txt))
    loss.backward()
    g = grads(model)
    for t in g.values():
        torch.distributed.all_reduce(t)
        t /= D.world_size()
    return D.all_reduce_mean([loss.item()]).item(), g


def test_single_process_helpers_are_identities() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    assert not D.is_distributed() and D.rank() == 0 and D.world_size() == 1 and D.is_main_process()
    assert D.all_gather_with_grad(x) is x
    assert D.gather_features(x, x, torch.arange(3))["all_labels"].tolist() == [0, 1, 2]
    assert D.init_distributed() is False  # WORLD_SIZE unset: a single process joins nothing


def test_slurm_environment_maps_to_torch_variables() -> None:
    env = {"SLURM_PROCID": "13", "SLURM_NTASKS": "512", "SLURM_LOCALID": "5", "LOCAL_RANK": "7"}
    assert D.env_from_slurm(env) == {"RANK": "13", "WORLD_SIZE": "512"}  # what torchrun already set wins


def test_missing_rendezvous_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        D.init_distributed()


def on_each_rank() -> dict[str, tuple[float, dict[str, torch.Tensor]] | float]:
    return {"unicl": data_parallel_step("unicl"), "clip": data_parallel_step("clip"),
            "nograd": without_gradient_through_gather()}


def without_gradient_through_gather() -> float:
    """The failure the gather-with-grad exists for: a plain all_gather loses the other ranks' gradient terms."""
    model, batch = tiny_model(), tiny_batch()
    half = slice(D.rank() * BATCH // 2, (D.rank() + 1) * BATCH // 2)
    local = {k: v[half] for k, v in batch.items()}
    img, txt, scale = model(local["image"], local["input_ids"], local["attention_mask"])
    all_img, all_txt = D.all_gather_nograd(img.detach()), D.all_gather_nograd(txt.detach())
    all_img[half], all_txt[half] = img, txt  # only the local columns keep their graph
    unicl_loss(img, txt, local["label"], scale, all_image_features=all_img, all_text_features=all_txt,
               all_labels=D.all_gather_nograd(local["label"])).backward()
    g = model.image_projection.weight.grad
    torch.distributed.all_reduce(g)
    return (g / D.world_size()).norm().item()


@pytest.fixture(scope="module")
def two_rank_results() -> list[dict]:
    return D.run_local(on_each_rank, world_size=2)


@pytest.mark.parametrize("loss_name", ["unicl", "clip"])
def test_two_ranks_equal_one_process_with_the_full_batch(loss_name: str, two_rank_results: list[dict],
                                                        full_batch: dict) -> None:
    ref_loss, ref_grads = full_batch[loss_name]
    for result in two_rank_results:
        loss, g = result[loss_name]
        assert loss == pytest.approx(ref_loss, rel=1e-6)
        assert_close_grads(g, ref_grads)


def test_gather_without_gradient_differs(two_rank_results: list[dict], full_batch: dict) -> None:
    _, ref_grads = full_batch["unicl"]
    ref = ref_grads["image_projection.weight"].norm().item()
    assert abs(two_rank_results[0]["nograd"] - ref) / ref > 1e-3
