"""Cross-domain few-shot classification, CD-FSL protocol (Guo et al. 2020; paper §3.4, Table 4).

An episode draws ``n_way`` classes, then ``k_shot + n_query`` distinct images of each: the first ``k_shot``
are the support set, the rest the queries, so no image is ever both. A fresh linear head is trained on the
support set as the benchmark's reference fine-tune does: SGD lr 0.01, momentum 0.9, dampening 0.9, weight decay
1e-3, batches of 4, 100 epochs, no augmentation, no dropout (each a parameter here; flips and dropout remain as
options). The score is the mean query accuracy over episodes with a 95% confidence interval (1.96 standard
errors), as CD-FSL reports it.

Two variants. Frozen (``few_shot_eval``): the head sees precomputed features; episodes are independent but
trained side by side as one batched head (one weight matrix per episode), which is exact: SGD with momentum,
dampening and weight decay acts element-wise and each episode's loss only touches its own weights. Florence's
(``finetune_episode``): the image tower is fine-tuned with the head in each episode, on a fresh copy, by plain
SGD as CD-FSL fine-tunes its backbone; far more expensive, so run on few episodes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..distributed import intra_op_threads


@dataclass(frozen=True)
class Episode:
    classes: np.ndarray  # (n_way,) dataset class ids; position i is episode label i
    support: np.ndarray  # (n_way * k_shot,) dataset indices, class-major
    query: np.ndarray  # (n_way * n_query,) dataset indices, class-major

    @property
    def support_labels(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.classes)), len(self.support) // len(self.classes))

    @property
    def query_labels(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.classes)), len(self.query) // len(self.classes))


def few_shot_episodes(labels: torch.Tensor | np.ndarray, n_way: int = 5, k_shot: int = 5, n_query: int = 15,
                      episodes: int = 600, seed: int = 0) -> list[Episode]:
    """Sample episodes from the classes that have at least ``k_shot + n_query`` images."""
    labels = np.asarray(labels)
    need = k_shot + n_query
    classes, counts = np.unique(labels, return_counts=True)
    eligible = classes[counts >= need]
    if len(eligible) < n_way:
        found = ", ".join(f"{c}: {n}" for c, n in zip(classes.tolist(), counts.tolist()))
        raise ValueError(f"{n_way}-way {k_shot}-shot episodes with {n_query} queries need {n_way} classes of "
                         f"at least {need} images; only {len(eligible)} qualify (images per class: {found})")
    members = {c: np.flatnonzero(labels == c) for c in eligible.tolist()}
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        chosen = rng.choice(eligible, n_way, replace=False)
        picks = [rng.choice(members[c], need, replace=False) for c in chosen.tolist()]
        out.append(Episode(chosen, np.concatenate([p[:k_shot] for p in picks]),
                           np.concatenate([p[k_shot:] for p in picks])))
    return out


@dataclass
class FewShotResult:
    accuracy: float  # mean query accuracy over episodes
    ci95: float  # 1.96 * std / sqrt(episodes)
    episode_accuracies: np.ndarray
    n_way: int
    k_shot: int
    n_query: int

    @classmethod
    def from_accuracies(cls, acc: np.ndarray, n_way: int, k_shot: int, n_query: int) -> FewShotResult:
        ci = 1.96 * acc.std() / np.sqrt(len(acc)) if len(acc) > 1 else float("nan")
        return cls(float(acc.mean()), float(ci), acc, n_way, k_shot, n_query)

    def metrics(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "ci95": self.ci95, "episodes": len(self.episode_accuracies),
                "n_way": self.n_way, "k_shot": self.k_shot, "n_query": self.n_query}


def train_episode_heads(support: torch.Tensor, labels: torch.Tensor, n_way: int,
                        support_flipped: torch.Tensor | None = None, *, epochs: int = 100,
                        batch_size: int = 4, lr: float = 0.01, momentum: float = 0.9,
                        dampening: float = 0.9, weight_decay: float = 1e-3, dropout: float = 0.0,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one linear head per episode on ``support (E, S, D)`` with shared labels ``(S,)``;
    returns weights ``(E, D, n_way)`` and biases ``(E, n_way)``."""
    e, s, d = support.shape
    bound = d**-0.5  # nn.Linear's default initialisation, drawn from our generator
    weight = ((torch.rand(e, d, n_way, generator=generator) * 2 - 1) * bound).requires_grad_()
    bias = ((torch.rand(e, n_way, generator=generator) * 2 - 1) * bound).requires_grad_()
    opt = torch.optim.SGD([weight, bias], lr=lr, momentum=momentum, dampening=dampening,
                          weight_decay=weight_decay)
    batch_size = min(batch_size, s)
    # the head's matmuls are tiny: with several intra-op threads, synchronising them costs ~10x the work on a
    # busy machine, so train on one thread and restore the caller's setting afterwards
    with intra_op_threads(1):
        for _ in range(epochs):
            _epoch(support, support_flipped, labels, weight, bias, opt, batch_size, dropout, generator)
    return weight.detach(), bias.detach()


def _epoch(support: torch.Tensor, support_flipped: torch.Tensor | None, labels: torch.Tensor,
           weight: torch.Tensor, bias: torch.Tensor, opt: torch.optim.Optimizer, batch_size: int,
           dropout: float, generator: torch.Generator | None) -> None:
    """One pass over every episode's support set, in a fresh random order per episode."""
    e, s, d = support.shape
    n_way = weight.shape[-1]
    order = torch.rand(e, s, generator=generator).argsort(dim=1)
    for start in range(0, s, batch_size):
        idx = order[:, start : start + batch_size]  # (E, B)
        gather_idx = idx[..., None].expand(-1, -1, d)
        x = support.gather(1, gather_idx)
        if support_flipped is not None:
            mirror = torch.rand(idx.shape, generator=generator) < 0.5
            x = torch.where(mirror[..., None], support_flipped.gather(1, gather_idx), x)
        if dropout > 0:
            x = x * (torch.rand(x.shape, generator=generator) >= dropout) / (1 - dropout)
        logits = torch.baddbmm(bias[:, None, :], x, weight)
        # summed over episodes: each episode gets exactly the gradient of its own mean loss
        loss = F.cross_entropy(logits.reshape(-1, n_way), labels[idx].reshape(-1), reduction="sum")
        loss = loss / idx.shape[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _probs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.baddbmm(bias[:, None, :], x, weight).softmax(dim=-1)


def few_shot_eval(
    features: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    *,
    flipped: torch.Tensor | None = None,
    n_way: int = 5,
    k_shot: int = 5,
    n_query: int = 15,
    episodes: int = 600,
    seed: int = 0,
    chunk: int = 100,
    **head: float,
) -> FewShotResult:
    """Run ``episodes`` CD-FSL episodes on frozen ``features (N, D)`` (and their mirrored twins ``flipped``);
    ``head`` goes to :func:`train_episode_heads` (epochs, batch_size, lr, momentum, dampening, weight_decay,
    dropout)."""
    features = features.float()
    flipped = flipped.float() if flipped is not None else None
    eps = few_shot_episodes(labels, n_way, k_shot, n_query, episodes, seed)
    gen = torch.Generator().manual_seed(seed)
    support_labels = torch.from_numpy(eps[0].support_labels)
    query_labels = torch.from_numpy(eps[0].query_labels)
    accs = []
    for start in tqdm(range(0, len(eps), chunk), desc=f"{n_way}-way {k_shot}-shot episodes", leave=False):
        batch = eps[start : start + chunk]
        sup = torch.from_numpy(np.stack([ep.support for ep in batch]))
        qry = torch.from_numpy(np.stack([ep.query for ep in batch]))
        sup_flipped = flipped[sup] if flipped is not None else None
        weight, bias = train_episode_heads(features[sup], support_labels, n_way, sup_flipped, generator=gen,
                                           **head)
        probs = _probs(features[qry], weight, bias)
        if flipped is not None:
            probs = (probs + _probs(flipped[qry], weight, bias)) / 2
        accs.append((probs.argmax(dim=-1) == query_labels).float().mean(dim=1))
    return FewShotResult.from_accuracies(torch.cat(accs).numpy(), n_way, k_shot, n_query)


def finetune_episode(tower: torch.nn.Module, support: torch.Tensor, support_labels: torch.Tensor,
                     query: torch.Tensor, query_labels: torch.Tensor, n_way: int, *, epochs: int = 100,
                     batch_size: int = 4, lr: float = 0.01, momentum: float = 0.9, dampening: float = 0.9,
                     weight_decay: float = 1e-3, backbone_lr: float = 0.01,
                     generator: torch.Generator | None = None) -> float:
    """Florence's episode: fine-tune a copy of ``tower`` (images -> features) with a new linear head on the
    support images ``(S, C, H, W)``; returns the query accuracy. ``tower`` itself is left untouched."""
    tower = copy.deepcopy(tower).eval()  # eval: no stochastic depth (see FewShotConfig)
    device = support.device
    with torch.no_grad():
        dim = tower(support[:1]).shape[1]
    bound = dim**-0.5
    head = torch.nn.Linear(dim, n_way).to(device)
    with torch.no_grad():  # nn.Linear's initialisation, drawn from our generator
        head.weight.copy_((torch.rand(n_way, dim, generator=generator) * 2 - 1) * bound)
        head.bias.copy_((torch.rand(n_way, generator=generator) * 2 - 1) * bound)
    opt_head = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, dampening=dampening,
                               weight_decay=weight_decay)
    opt_tower = torch.optim.SGD(tower.parameters(), lr=backbone_lr)
    for _ in range(epochs):
        order = torch.randperm(len(support), generator=generator)
        for start in range(0, len(support), batch_size):
            idx = order[start : start + batch_size].to(device)
            loss = F.cross_entropy(head(tower(support[idx])), support_labels[idx])
            opt_head.zero_grad(set_to_none=True)
            opt_tower.zero_grad(set_to_none=True)
            loss.backward()
            opt_head.step()
            opt_tower.step()
    with torch.no_grad():
        return (head(tower(query)).argmax(-1) == query_labels).float().mean().item()
