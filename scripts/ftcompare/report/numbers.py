"""Rounding and printing numbers the same way in the HTML, the CSV and the LaTeX tables."""

import math


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def as_number(value) -> float | int | None:
    """`value` if it is a finite number, else None (missing, null, NaN, text, booleans)."""
    if hasattr(value, "item") and not isinstance(value, (int, float)):  # numpy scalars
        value = value.item()
    return value if is_number(value) else None


def rounded(value, decimals: int | None = None, significant: int | None = None):
    """`value` rounded to fixed `decimals` or to `significant` digits; integers stay integers."""
    value = as_number(value)
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if significant is not None:
        if value == 0:
            return 0.0
        digits = significant - 1 - math.floor(math.log10(abs(value)))
        return round(value, max(digits, 0)) if digits > 0 else float(round(value))
    if decimals is not None:
        return round(value, decimals)
    return value


def format_number(
    value, decimals: int | None = None, significant: int | None = None, thousands: str = ","
) -> str | None:
    """Text for `value` (None when there is no number): fixed decimals or significant digits,
    groups of thousands joined by `thousands`, never scientific notation."""
    value = rounded(value, decimals, significant)
    if value is None:
        return None
    if isinstance(value, int):
        text = f"{value:,d}"
    elif significant is not None:
        digits = max(significant - 1 - math.floor(math.log10(abs(value))), 0) if value else 0
        text = f"{value:,.{digits}f}"
    else:
        text = f"{value:,.{decimals if decimals is not None else 6}f}"
    if text.startswith("-") and float(text[1:].replace(",", "")) == 0:
        text = text[1:]
    return text.replace(",", thousands)


def ratio(numerator, denominator) -> float | None:
    numerator, denominator = as_number(numerator), as_number(denominator)
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
