"""UniCL loss: agrees with open_clip's CLIP loss on distinct labels and with the paper's Eq. (1)-(3) otherwise."""

import math

import pytest
import torch
import torch.nn.functional as F

from florence_lib.losses import clip_loss, unicl_loss, unicl_targets


def features(n: int, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(image + 0.7 * torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1)
    return image, text


def eq_1_to_3(image: torch.Tensor, text: torch.Tensor, labels: list[int], tau: float) -> float:
    """A literal loop over paper Eq. (2) and (3) (u = image, v = text), averaged over the batch and halved."""
    n = len(labels)
    sim = [[tau * float(image[i] @ text[j]) for j in range(n)] for i in range(n)]
    i2t = t2i = 0.0
    for i in range(n):
        positives = [k for k in range(n) if labels[k] == labels[i]]
        denom = sum(math.exp(sim[i][j]) for j in range(n))
        i2t -= sum(math.log(math.exp(sim[i][k]) / denom) for k in positives) / len(positives)
    for j in range(n):
        positives = [k for k in range(n) if labels[k] == labels[j]]
        denom = sum(math.exp(sim[i][j]) for i in range(n))
        t2i -= sum(math.log(math.exp(sim[k][j]) / denom) for k in positives) / len(positives)
    return (i2t + t2i) / (2 * n)


def test_equals_open_clip_clip_loss_when_labels_are_distinct():
    from open_clip.loss import ClipLoss

    image, text = features(12)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    labels = torch.randperm(12, generator=torch.Generator().manual_seed(1)) * 7  # distinct, not arange
    reference = ClipLoss()(image, text, scale)
    assert unicl_loss(image, text, labels, scale).item() == pytest.approx(reference.item(), abs=1e-6)
    assert clip_loss(image, text, scale).item() == pytest.approx(reference.item(), abs=1e-6)


def test_equals_equation_1_to_3_when_labels_repeat():
    image, text = features(10, seed=3)
    labels = [0, 1, 0, 2, 2, 2, 3, 1, 4, 0]
    got = unicl_loss(image, text, torch.tensor(labels), torch.tensor(20.0, dtype=torch.float64))
    assert got.item() == pytest.approx(eq_1_to_3(image, text, labels, 20.0), abs=1e-9)
    # repeated captions are no longer negatives of each other: the loss differs from CLIP's
    assert abs(got.item() - clip_loss(image, text, torch.tensor(20.0, dtype=torch.float64)).item()) > 1e-3


def test_targets_spread_evenly_over_positives():
    targets = unicl_targets(torch.tensor([5, 7, 5, 5]))
    assert torch.allclose(targets.sum(1), torch.ones(4))
    assert torch.equal(targets[0], torch.tensor([1 / 3, 0, 1 / 3, 1 / 3]))
    assert torch.equal(targets[1], torch.tensor([0.0, 1, 0, 0]))


def test_gradients_are_finite_including_temperature():
    image, text = (f.float().requires_grad_() for f in features(8))
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss = unicl_loss(F.normalize(image, dim=-1), F.normalize(text, dim=-1), torch.tensor([0, 0, 1, 2, 3, 3, 3, 4]),
                      log_scale.exp())
    loss.backward()
    for grad in (image.grad, text.grad, log_scale.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gather_seam_splits_the_full_batch_loss_over_ranks():
    """Two 'ranks' each scoring their rows against the gathered columns average to the single-process loss."""
    image, text = features(8, seed=5)
    labels = torch.tensor([0, 1, 1, 2, 3, 0, 4, 4])
    scale = torch.tensor(10.0, dtype=torch.float64)
    shards = [slice(0, 4), slice(4, 8)]
    per_rank = [
        unicl_loss(image[s], text[s], labels[s], scale, all_image_features=image, all_text_features=text,
                   all_labels=labels)
        for s in shards
    ]
    assert (sum(per_rank) / 2).item() == pytest.approx(unicl_loss(image, text, labels, scale).item(), abs=1e-12)
    per_rank_clip = [
        clip_loss(image[s], text[s], scale, all_image_features=image, all_text_features=text, first_index=s.start)
        for s in shards
    ]
    assert (sum(per_rank_clip) / 2).item() == pytest.approx(clip_loss(image, text, scale).item(), abs=1e-12)
