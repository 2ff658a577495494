"""Statistics over seeds: mean with a t-interval, the difference of two arms with Welch's test, and the
expected best of n trials. scipy.stats does the distributions; nothing here is a test of its own making.

A "stat" is the dict summary.json holds for a figure over seeds:
{"mean", "ci_low", "ci_high", "n", "std", "values"}; with fewer than two values there is no spread, and
ci_low, ci_high and std are None.
"""

import math

import numpy as np
from scipy import stats

from ftcompare.report.numbers import as_number


def finite_values(values) -> list[float]:
    """The numbers among `values` (None, NaN and infinities left out)."""
    return [float(v) for v in (as_number(value) for value in values) if v is not None]


def describe(values, confidence: float) -> dict:
    """Mean of `values` and its two-sided t-interval at `confidence` (Student's t with n - 1 degrees of
    freedom, scale the standard error s / sqrt(n)), with the sample standard deviation (ddof 1)."""
    numbers = finite_values(values)
    n = len(numbers)
    stat = {"mean": None, "ci_low": None, "ci_high": None, "n": n, "std": None, "values": numbers}
    if n == 0:
        return stat
    stat["mean"] = float(np.mean(numbers))
    if n < 2:
        return stat
    std = float(np.std(numbers, ddof=1))
    stat["std"] = std
    if std == 0:  # identical values: the interval is the point (scipy refuses a zero scale)
        stat["ci_low"] = stat["ci_high"] = stat["mean"]
        return stat
    low, high = stats.t.interval(confidence, n - 1, loc=stat["mean"], scale=std / math.sqrt(n))
    stat["ci_low"], stat["ci_high"] = float(low), float(high)
    return stat


def welch_difference(values, reference, confidence: float) -> dict:
    """mean(values) - mean(reference), with the interval and the test of Welch's unequal-variances t-test
    (scipy.stats.ttest_ind(equal_var=False) and its confidence_interval at `confidence`).

    Returns {"difference": {"mean", "ci_low", "ci_high"}, "welch": {"t", "p", "df"}}: the difference alone
    where either side has fewer than two values, and None wherever the test is undefined (both sides
    without spread).
    """
    a, b = finite_values(values), finite_values(reference)
    result = {
        "difference": {"mean": None, "ci_low": None, "ci_high": None},
        "welch": {"t": None, "p": None, "df": None},
    }
    if not a or not b:
        return result
    result["difference"]["mean"] = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return result
    if np.var(a) == 0 and np.var(b) == 0:  # no spread on either side: Welch's t is undefined
        return result
    test = stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(confidence_level=confidence)
    result["difference"].update(ci_low=_finite(interval.low), ci_high=_finite(interval.high))
    result["welch"] = {"t": _finite(test.statistic), "p": _finite(test.pvalue), "df": _finite(test.df)}
    return result


def expected_best(losses, max_trials: int | None = None) -> list[float]:
    """Expected lowest loss of n trials, n = 1 .. max_trials (default: as many as there are losses).

    Dodge et al. 2019 ("Show your work: improved reporting of experimental results", EMNLP), eq. 1, for a
    minimum: the n trials are drawn with replacement from the N observed losses, so with the losses sorted
    ascending, v_1 <= ... <= v_N, P(min = v_i) = ((N - i + 1) / N)^n - ((N - i) / N)^n and
    E[min of n] = sum_i v_i P(min = v_i). With n = 1 it is the mean; as n grows it falls towards v_1.
    (Tang et al. 2020 give an unbiased variant that draws without replacement; this is Dodge's.)
    """
    values = np.sort(np.array(finite_values(losses)))
    count = len(values)
    if count == 0:
        return []
    ranks = np.arange(1, count + 1)
    curve = []
    for n in range(1, (max_trials or count) + 1):
        weights = ((count - ranks + 1) / count) ** n - ((count - ranks) / count) ** n
        curve.append(float(np.dot(weights, values)))
    return curve


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
