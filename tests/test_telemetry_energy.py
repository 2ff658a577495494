"""Energy accounting: a counter is trusted only when it agrees with integrated power."""

import pytest

from ftcompare.telemetry.energy import account_energy

TIMES = [0.0, 0.5, 1.0, 1.5, 2.0]
POWER = [300.0, 300.0, 300.0, 300.0, 300.0]  # 600 J over 2 s


def test_a_consistent_counter_is_used_and_cumulative_from_the_first_sample():
    counter = [5000.0, 5150.0, 5300.0, 5450.0, 5600.0]
    energy = account_energy(TIMES, POWER, counter, "the counter")
    assert energy.total_j == 600.0
    assert energy.cumulative_j == [0.0, 150.0, 300.0, 450.0, 600.0]
    assert energy.method == "the counter, consistent with integrated power (600.0 J)"


def test_a_counter_going_backwards_falls_back_to_integrated_power():
    energy = account_energy(TIMES, POWER, [5000.0, 5150.0, 10.0, 160.0, 310.0], "the counter")
    assert energy.total_j == pytest.approx(600.0)
    assert energy.cumulative_j == pytest.approx([0.0, 150.0, 300.0, 450.0, 600.0])
    assert "integrated power samples" in energy.method and "went backwards at 1.0 s" in energy.method


def test_a_frozen_counter_while_power_is_drawn_is_rejected():
    energy = account_energy(TIMES, POWER, [7.0] * 5, "the counter")
    assert energy.total_j == pytest.approx(600.0)
    assert "did not advance" in energy.method


def test_a_counter_far_from_integrated_power_is_rejected():
    energy = account_energy(TIMES, POWER, [0.0, 1.0, 2.0, 3.0, 4.0], "the counter")
    assert energy.total_j == pytest.approx(600.0)
    assert "counted 4.0 J where integrated power gives 600.0 J" in energy.method


def test_no_counter_integrates_power_and_says_why_and_over_what_share():
    energy = account_energy(
        TIMES,
        [300.0, None, 300.0, 300.0, 300.0],
        [None] * 5,
        "the counter",
        counter_missing_reason="nvml: NVMLError_NotSupported: Not Supported",
    )
    assert energy.total_j == pytest.approx(300.0)  # the two intervals around the gap are skipped
    assert "over 50% of the job" in energy.method and "NVMLError_NotSupported" in energy.method


def test_neither_counter_nor_power_measures_nothing_rather_than_zero():
    energy = account_energy(TIMES, [None] * 5, [None] * 5, "the counter", counter_missing_reason="N/A")
    assert energy.total_j is None and energy.cumulative_j == [None] * 5
    assert energy.method.startswith("not measured")


def test_an_idle_gcd_reading_zero_power_and_a_still_counter_is_zero_joules():
    energy = account_energy(TIMES, [0.0] * 5, [42.0] * 5, "the counter")
    assert energy.total_j == 0.0
    assert "too little to cross-check" in energy.method
