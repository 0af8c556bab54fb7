"""Linear probe as CLIP runs it (paper §3.2, Table 2; Radford et al. 2021, appendix A.3).

Frozen features, scikit-learn's L-BFGS logistic regression with at most 1,000 iterations. The L2 strength is
swept on a validation split: a coarse grid C in {1e-6, 1e-4, ..., 1e6}, then a binary search that halves the
step around the best value until it reaches 8 steps per decade. The chosen C is refitted on train + val and
reported on the test split, which the sweep never sees.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .metrics import classification_metrics

if TYPE_CHECKING:  # scikit-learn takes seconds to import: only when a probe runs (zero-shot notebooks skip it)
    from sklearn.linear_model import LogisticRegression

Selection = Literal["top1", "mean_per_class"]


@dataclass
class LinearProbeResult:
    metrics: dict[str, float]  # test top1 / top5 / mean_per_class and the chosen C
    best_c: float
    sweep: dict[float, float] = field(default_factory=dict)  # C -> validation score, in the order tried
    test_logits: torch.Tensor | None = None
    not_converged: int = 0  # fits that stopped at max_iter
    classifier: Any = None


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def split_validation(features: np.ndarray, labels: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stratified hold-out of the training set, for sets that ship no validation split."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    xt, xv, yt, yv = train_test_split(features, labels, test_size=fraction, random_state=seed,
                                      stratify=stratify)
    return xt, yt, xv, yv


class _Fitter:
    def __init__(self, max_iter: int, seed: int) -> None:
        self.max_iter, self.seed, self.not_converged = max_iter, seed, 0

    def __call__(self, c: float, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=c, max_iter=self.max_iter, solver="lbfgs", random_state=self.seed)
        # One BLAS thread: these fits are small, and spinning BLAS threads on a busy machine made them 12-20x
        # slower (measured: 14 s vs 1.2 s for one fit at C=1e-6 on 480 x 256 features, 64 classes).
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)  # counted instead: tiny/huge C hit max_iter
            clf.fit(x, y)
        self.not_converged += int(np.max(clf.n_iter_) >= self.max_iter)
        return clf


def _score(clf: LogisticRegression, x: np.ndarray, y: np.ndarray, selection: Selection,
           num_classes: int) -> float:
    logits = torch.from_numpy(_class_logits(clf, x, num_classes))
    return classification_metrics(logits, torch.from_numpy(y), ks=(1,))[selection]


def _class_logits(clf: LogisticRegression, x: np.ndarray, num_classes: int) -> np.ndarray:
    """Log-probabilities in label order, -inf for classes the classifier never saw in training."""
    out = np.full((len(x), num_classes), -np.inf)
    out[:, clf.classes_] = clf.predict_log_proba(x)
    return out


def sweep_c(fit: _Fitter, xt: np.ndarray, yt: np.ndarray, xv: np.ndarray, yv: np.ndarray,
            selection: Selection = "top1", log10_range: tuple[float, float] = (-6.0, 6.0),
            coarse_step: float = 2.0, steps_per_decade: int = 8,
            num_classes: int | None = None) -> dict[float, float]:
    """CLIP's parametric binary search over log10(C); returns every C tried with its validation score.
    ``num_classes`` sizes the score matrix (default: from both splits, so a class missing from either fits)."""
    lo, hi = log10_range
    num_classes = num_classes if num_classes is not None else int(max(yt.max(), yv.max())) + 1
    scores: dict[float, float] = {}
    bar = tqdm(desc="linear probe C sweep", leave=False)

    def run(log_c: float) -> None:
        log_c = round(log_c, 6)
        if lo - 1e-9 <= log_c <= hi + 1e-9 and log_c not in scores:
            scores[log_c] = _score(fit(10.0**log_c, xt, yt), xv, yv, selection, num_classes)
            bar.update()

    for log_c in np.arange(lo, hi + 1e-9, coarse_step):
        run(float(log_c))
    step = coarse_step
    while step > 1.0 / steps_per_decade + 1e-9:
        step /= 2
        best = max(sorted(scores), key=lambda k: scores[k])  # ties -> the smaller C (stronger regularisation)
        run(best - step)
        run(best + step)
    bar.close()
    return {10.0**k: v for k, v in scores.items()}


def linear_probe(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray,
    test_features: torch.Tensor | np.ndarray,
    test_labels: torch.Tensor | np.ndarray,
    val_features: torch.Tensor | np.ndarray | None = None,
    val_labels: torch.Tensor | np.ndarray | None = None,
    *,
    val_fraction: float = 0.2,
    selection: Selection = "top1",
    log10_range: tuple[float, float] = (-6.0, 6.0),
    coarse_step: float = 2.0,
    steps_per_decade: int = 8,
    max_iter: int = 1000,
    seed: int = 0,
) -> LinearProbeResult:
    """Sweep C on validation (given, or split off the training set), refit on train + val, score on test."""
    xt, yt = _numpy(train_features).astype(np.float64), _numpy(train_labels).astype(np.int64)
    xs, ys = _numpy(test_features).astype(np.float64), _numpy(test_labels).astype(np.int64)
    if (val_features is None) != (val_labels is None):
        raise ValueError("give both val_features and val_labels, or neither")
    if val_features is None:
        xt, yt, xv, yv = split_validation(xt, yt, val_fraction, seed)
    else:
        xv, yv = _numpy(val_features).astype(np.float64), _numpy(val_labels).astype(np.int64)
    if not (xt.shape[1] == xv.shape[1] == xs.shape[1]):
        raise ValueError(f"feature dimensions differ: train {xt.shape[1]}, val {xv.shape[1]}, "
                         f"test {xs.shape[1]}")
    num_classes = int(max(yt.max(), yv.max(), ys.max())) + 1  # from every split: any may miss a class
    fit = _Fitter(max_iter, seed)
    sweep = sweep_c(fit, xt, yt, xv, yv, selection, log10_range, coarse_step, steps_per_decade, num_classes)
    best_c = max(sorted(sweep), key=lambda c: sweep[c])
    clf = fit(best_c, np.concatenate([xt, xv]), np.concatenate([yt, yv]))
    logits = torch.from_numpy(_class_logits(clf, xs, num_classes)).float()
    metrics = classification_metrics(logits, torch.from_numpy(ys))
    metrics["C"] = best_c
    return LinearProbeResult(metrics, best_c, sweep, logits, fit.not_converged, clf)
