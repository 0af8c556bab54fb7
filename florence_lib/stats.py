"""Seed statistics for ablations: a mean with its 95% confidence interval, and whether two arms differ.

A claim such as "UniCL beats CLIP where captions repeat" is a difference between two small samples of runs (one
per seed), so it is reported as mean +- half-width of the Student-t 95% interval and tested with Welch's t-test
(unequal variances), the standard choice for a handful of seeds per arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` runs and the half-width of its ``level`` confidence interval (nan for a single run)."""

    mean: float
    half_width: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:.3f} +- {self.half_width:.3f}"


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Student-t confidence interval of the mean of ``values`` (independent runs, e.g. seeds)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci: no values")
    mean = sum(values) / n
    if n == 1:
        return MeanCI(mean, math.nan, 1, level)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return MeanCI(mean, stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n), n, level)


@dataclass(frozen=True)
class Comparison:
    """Arm a minus arm b: the difference of means, Welch's t-test p-value, and significance at ``alpha``."""

    a: MeanCI
    b: MeanCI
    difference: float
    p_value: float
    significant: bool

    def __str__(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return f"{self.a} vs {self.b}: difference {self.difference:+.3f}, p = {self.p_value:.3g} ({verdict})"


def compare(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> Comparison:
    """Welch's two-sided t-test of ``mean(a) == mean(b)``; identical constant samples give p = 1."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"compare: needs at least 2 runs per arm, got {len(a)} and {len(b)}")
    ma, mb = mean_ci(a, 1 - alpha), mean_ci(b, 1 - alpha)
    if max(a) == min(a) and max(b) == min(b):  # no variance: the test is undefined
        p = 1.0 if ma.mean == mb.mean else 0.0
    else:
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(mean_ci(a), mean_ci(b), ma.mean - mb.mean, p, p < alpha)
