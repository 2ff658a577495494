"""A device's energy over the job: its energy counter where that is trustworthy, else integrated power.

Energy counters can freeze, reset or go backwards (amdsmi on some chips and drivers), so the
counter is checked against the trapezoid integral of the sampled power. The bounds are a sanity
check that catches a broken counter, not a calibration: sampled power misses short spikes.
"""

from dataclasses import dataclass

# The counter is accepted when it lies within this factor of integrated power.
AGREEMENT_FACTOR = 2.0
# Below this much integrated energy the comparison says nothing (an idle or power-less device).
MEANINGFUL_J = 1.0


@dataclass
class Energy:
    total_j: float | None
    cumulative_j: list  # per sample, energy since the first sample; None where unknown
    method: str


def account_energy(times, powers_w, counters_j, counter_name: str, counter_missing_reason: str | None = None):
    """Energy for one device from aligned per-sample lists (None for a missing reading)."""
    integrated, integrated_total, covered_s = _integrate(times, powers_w)
    counter, counter_total, problem = _counter(times, counters_j, powers_w)
    span_s = (times[-1] - times[0]) if len(times) > 1 else 0.0
    partial = span_s and covered_s < 0.99 * span_s
    coverage = f" over {100 * covered_s / span_s:.0f}% of the job (gaps skipped)" if partial else ""
    if counter is not None and problem is None and integrated is not None and integrated_total >= MEANINGFUL_J:
        ratio = counter_total / integrated_total
        if not 1 / AGREEMENT_FACTOR <= ratio <= AGREEMENT_FACTOR:
            problem = f"it counted {counter_total:.1f} J where integrated power gives {integrated_total:.1f} J"
    if counter is not None and problem is None:
        if integrated is None:
            check = "not cross-checked: no power readings"
        elif integrated_total >= MEANINGFUL_J:
            check = f"consistent with integrated power ({integrated_total:.1f} J)"
        else:
            check = "integrated power is under 1 J, too little to cross-check"
        return Energy(counter_total, counter, f"{counter_name}, {check}")
    if integrated is not None:
        why = (
            f"{counter_name} rejected: {problem}"
            if problem
            else f"no energy counter: {counter_missing_reason or 'not reported'}"
        )
        return Energy(integrated_total, integrated, f"integrated power samples (trapezoid rule){coverage}; {why}")
    why = f"{counter_name} rejected: {problem}" if problem else (counter_missing_reason or "no energy counter")
    return Energy(None, [None] * len(times), f"not measured: {why}; no power readings to integrate")


def _integrate(times, powers):
    if not any(p is not None for p in powers):
        return None, None, 0.0
    cumulative, total, covered = [0.0], 0.0, 0.0
    for i in range(1, len(times)):
        if powers[i - 1] is not None and powers[i] is not None:
            step = times[i] - times[i - 1]
            total += (powers[i - 1] + powers[i]) / 2 * step
            covered += step
        cumulative.append(total)
    return cumulative, total, covered


def _counter(times, counters, powers):
    """(cumulative list, total, problem) from the counter; (None, None, reason) when it is unusable."""
    known = [i for i, value in enumerate(counters) if value is not None]
    if not known:
        return None, None, None
    first, previous = known[0], known[0]
    for i in known[1:]:
        if counters[i] < counters[previous]:
            return None, None, f"it went backwards at {times[i]:.1f} s"
        previous = i
    cumulative = [counters[i] - counters[first] if counters[i] is not None else None for i in range(len(counters))]
    total = counters[known[-1]] - counters[first]
    drawn = [p for p in powers if p is not None and p > 0]
    if total == 0 and len(known) > 1 and drawn and (times[known[-1]] - times[first]) * min(drawn) >= MEANINGFUL_J:
        return None, None, "it did not advance while the device drew power"
    return cumulative, total, None
