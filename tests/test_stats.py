import math

import pytest

from florence_lib.stats import compare, mean_ci


def test_mean_ci_matches_the_t_table():
    ci = mean_ci([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.303
    assert ci.mean == pytest.approx(2.0) and ci.half_width == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert ci.n == 3 and str(ci) == "2.000 +- 2.484"
    assert math.isnan(mean_ci([0.5]).half_width)
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_compare_separates_clear_differences_from_noise():
    clear = compare([0.80, 0.82, 0.81], [0.50, 0.52, 0.49])
    assert clear.significant and clear.p_value < 1e-3 and clear.difference == pytest.approx(0.3067, abs=1e-3)
    noise = compare([0.50, 0.60, 0.40], [0.52, 0.41, 0.58])
    assert not noise.significant and noise.p_value > 0.5
    # Welch's statistic by hand: t = (mean a - mean b) / sqrt(va/na + vb/nb), p from Welch-Satterthwaite dof
    assert compare([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]).p_value == pytest.approx(0.3338, abs=2e-3)  # t = -1.134, dof 3.23
    assert compare([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        compare([1.0], [2.0, 3.0])
