"""One plain sentence per comparison that claims no more than its interval supports: a direction only
where the interval of the difference excludes zero; otherwise it says the interval includes no
difference, or that one seed gives no interval at all. It names the sample size and the unit."""

import math

from ftcompare.compare.measures import Measure
from ftcompare.report.numbers import format_number

_LEAD = "At their best learning rates, "


def verdict(measure: Measure, arm: str, reference: str, difference: dict, n: tuple[int, int], confidence: float) -> str:
    """The sentence for `arm` minus `reference` on `measure` (difference: {"mean", "ci_low", "ci_high"})."""
    mean, low, high = difference["mean"], difference["ci_low"], difference["ci_high"]
    seeds = seed_counts(n, arm, reference)
    if mean is None:
        missing = "neither has a value" if not n[0] and not n[1] else f"{arm if not n[0] else reference} has no value"
        return f"{_LEAD}{arm}'s {measure.noun} cannot be compared with {reference}'s: {missing}."
    if low is None or high is None:
        if min(n) < 2:
            why = "one seed gives no interval, so this does not show a difference beyond what another seed might give"
        else:
            why = "the seeds do not vary, so there is no interval and no test"
        if mean == 0:
            return f"{_LEAD}{arm}'s {measure.noun} was the same as {reference}'s ({seeds}); {why}."
        return (
            f"{_LEAD}{arm}'s {measure.noun} was {_number(abs(mean), [mean])} {measure.unit} "
            f"{_direction(measure, mean)} than {reference}'s ({seeds}); {why}."
        )
    level = f"{confidence * 100:g}%"
    if low <= 0 <= high:
        numbers = [mean, low, high]
        signed = _signed(mean, numbers)
        return (
            f"{_LEAD}{arm}'s {measure.noun} differs from {reference}'s by {signed} {measure.unit} ({level} interval "
            f"{_number(low, numbers)} to {_number(high, numbers)}, {seeds}): the interval includes no difference, "
            f"so these runs do not show which is {measure.more}."
        )
    # The interval excludes zero: state the direction, and the interval of the size of the difference.
    low_size, high_size = sorted((abs(low), abs(high)))
    numbers = [abs(mean), low_size, high_size]
    size = _number(abs(mean), numbers)
    return (
        f"{_LEAD}{arm}'s {measure.noun} is {size} {measure.unit} {_direction(measure, mean)} than "
        f"{reference}'s ({level} interval {_number(low_size, numbers)} to {_number(high_size, numbers)}, {seeds})."
    )


def seed_counts(n: tuple[int, int], arm: str, reference: str) -> str:
    """ "3 seeds each", or "3 seeds for LoRA, 2 for full fine-tuning"."""
    if n[0] == n[1]:
        return f"{n[0]} seed{'s' if n[0] != 1 else ''} each"
    return f"{n[0]} seed{'s' if n[0] != 1 else ''} for {arm}, {n[1]} for {reference}"


def _direction(measure: Measure, value: float) -> str:
    return measure.more if value > 0 else measure.less


def _decimals(numbers: list[float]) -> int:
    """Two significant digits of the largest number: the precision every number of a sentence shares."""
    largest = max(abs(v) for v in numbers)
    return max(1 - math.floor(math.log10(largest)), 0) if largest else 2


def _number(value: float, numbers: list[float]) -> str:
    """`value` with the decimals the sentence's numbers share; 2.0e15 for counts in the millions and up."""
    if max(abs(v) for v in numbers) >= 1e6:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return format_number(value, decimals=_decimals(numbers))


def _signed(value: float, numbers: list[float]) -> str:
    text = _number(value, numbers)
    return text if text.startswith("-") else f"+{text}"
