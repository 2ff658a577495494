"""The comparison's statistics (ftcompare.compare.stats) against values computed by hand.

The t quantiles and p-values below were computed without scipy: Student's t density
Γ((v+1)/2) / (sqrt(vπ) Γ(v/2)) (1 + x²/v)^(-(v+1)/2) integrated with numpy.trapezoid, and the quantile
found by bisection on that integral; they agree with printed t tables (t_0.975,2 = 4.303, t_0.975,4 = 2.776).
"""

import math

import pytest

from ftcompare.compare.stats import describe, expected_best, finite_values, welch_difference


def test_the_mean_and_its_t_interval_over_three_seeds():
    # mean 2, s = 1 (ddof 1), standard error 1/sqrt(3) = 0.57735; t_0.975 with 2 df = 4.3026527.
    stat = describe([1.0, 3.0, 2.0], 0.95)
    half = 4.3026527 / math.sqrt(3)  # 2.484138
    assert stat["n"] == 3 and stat["values"] == [1.0, 3.0, 2.0]
    assert stat["mean"] == pytest.approx(2.0)
    assert stat["std"] == pytest.approx(1.0)
    assert stat["ci_low"] == pytest.approx(2 - half, abs=1e-6)  # -0.484138
    assert stat["ci_high"] == pytest.approx(2 + half, abs=1e-6)  # 4.484138


def test_the_confidence_level_sets_the_interval():
    # t_0.95 with 2 df = 2.9199856: a 90% interval is narrower.
    stat = describe([1.0, 2.0, 3.0], 0.90)
    assert stat["ci_high"] - stat["mean"] == pytest.approx(2.9199856 / math.sqrt(3), abs=1e-6)


def test_one_seed_has_a_mean_and_no_interval_and_nothing_has_neither():
    assert describe([1.25], 0.95) == {
        "mean": 1.25,
        "ci_low": None,
        "ci_high": None,
        "n": 1,
        "std": None,
        "values": [1.25],
    }
    assert describe([None, float("nan")], 0.95)["mean"] is None
    assert describe([None, float("nan")], 0.95)["n"] == 0


def test_identical_seeds_give_a_point_interval():
    stat = describe([0.5, 0.5], 0.95)
    assert (stat["ci_low"], stat["mean"], stat["ci_high"], stat["std"]) == (0.5, 0.5, 0.5, 0.0)


def test_missing_values_are_left_out():
    assert finite_values([1, None, float("inf"), "x", 2.5, True]) == [1.0, 2.5]


def test_welch_difference_whose_interval_includes_zero():
    # a = 1, 2, 3 (mean 2, variance 1); b = 4, 6, 8 (mean 6, variance 4); three each.
    # Standard error sqrt(1/3 + 4/3) = 1.2909944; t = -4 / 1.2909944 = -3.0983867.
    # Welch-Satterthwaite df = (5/3)² / ((1/3)²/2 + (4/3)²/2) = 50/17 = 2.9411765.
    # Two-sided p = 0.0547868; t_0.975 with 50/17 df = 3.2187586, so the interval is
    # -4 ± 3.2187586 × 1.2909944 = (-8.1553995, 0.1553995).
    result = welch_difference([1.0, 2.0, 3.0], [4.0, 6.0, 8.0], 0.95)
    assert result["difference"]["mean"] == pytest.approx(-4.0)
    assert result["welch"]["t"] == pytest.approx(-3.0983867, abs=1e-6)
    assert result["welch"]["df"] == pytest.approx(50 / 17)
    assert result["welch"]["p"] == pytest.approx(0.0547868, abs=1e-6)
    assert result["difference"]["ci_low"] == pytest.approx(-8.1553995, abs=1e-5)
    assert result["difference"]["ci_high"] == pytest.approx(0.1553995, abs=1e-5)


def test_welch_difference_whose_interval_excludes_zero():
    # a = 1, 2, 3; b = 10, 11, 12: difference -9, standard error sqrt(2/3) = 0.8164966, df = 4,
    # t = -11.0227038, p = 0.000385068, t_0.975 with 4 df = 2.7764451: (-11.2669579, -6.7330421).
    result = welch_difference([1.0, 2.0, 3.0], [10.0, 11.0, 12.0], 0.95)
    assert result["welch"]["t"] == pytest.approx(-11.0227038, abs=1e-6)
    assert result["welch"]["df"] == pytest.approx(4.0)
    assert result["welch"]["p"] == pytest.approx(0.000385068, rel=1e-4)
    assert result["difference"]["ci_low"] == pytest.approx(-11.2669579, abs=1e-5)
    assert result["difference"]["ci_high"] == pytest.approx(-6.7330421, abs=1e-5)


def test_welch_with_one_seed_on_a_side_gives_the_difference_alone():
    result = welch_difference([1.5], [1.0, 1.2], 0.95)
    assert result["difference"] == {"mean": pytest.approx(0.4), "ci_low": None, "ci_high": None}
    assert result["welch"] == {"t": None, "p": None, "df": None}
    assert welch_difference([], [1.0], 0.95)["difference"]["mean"] is None


def test_welch_without_spread_on_either_side_is_undefined_not_infinite():
    result = welch_difference([1.0, 1.0], [2.0, 2.0], 0.95)
    assert result["difference"]["mean"] == -1.0
    assert result["difference"]["ci_low"] is None and result["welch"]["t"] is None


def test_expected_best_of_n_trials_by_hand():
    # Losses 1, 2, 3 (N = 3), n draws with replacement:
    # n = 1: the mean, 2.
    # n = 2: P(min=1) = 1 - (2/3)² = 5/9, P(min=2) = (2/3)² - (1/3)² = 3/9, P(min=3) = 1/9: 14/9.
    # n = 3: P(min=1) = 1 - 8/27 = 19/27, P(min=2) = 8/27 - 1/27 = 7/27, P(min=3) = 1/27: 36/27.
    assert expected_best([3.0, 1.0, 2.0]) == pytest.approx([2.0, 14 / 9, 36 / 27])
    # n = 5: 1 · (1 - 32/243) + 2 · (32/243 - 1/243) + 3 · 1/243 = 1 + 33/243.
    assert expected_best([3.0, 1.0, 2.0], max_trials=5)[-1] == pytest.approx(1 + 33 / 243)


def test_expected_best_with_ties_and_gaps():
    # Losses 1, 1, 2: the minimum of two draws is 2 only when both are 2 (1/9): 1 · 8/9 + 2 · 1/9 = 10/9.
    assert expected_best([1.0, 2.0, 1.0]) == pytest.approx([4 / 3, 10 / 9, 1 + 1 / 27])
    assert expected_best([None, 2.0]) == [2.0]
    assert expected_best([]) == []
