"""Reading the report's comparison section back: each cell's exact value (data-value) against the
compare rule's results/compare/summary.json."""

import re

from helpers.html import Element, assert_shows, shown, table_rows

STAT_LABELS = {  # the at-best table's row labels, without their unit
    "Held-out loss": "eval_loss",
    "Final training loss": "final_train_loss",
    "Mean training loss": "mean_train_loss",
    "Training runtime": "train_runtime_s",
    "Peak memory": "peak_memory_mb",
    "Energy": "energy_j",
    "Tokens seen": "tokens_seen",
    "Training compute": "flops",
}
UNIT_SCALES = {"kJ": 1e3, "EFLOP": 1e18, "PFLOP": 1e15, "TFLOP": 1e12, "GFLOP": 1e9, "MFLOP": 1e6}


def stat_key(label: str) -> tuple[str, str]:
    """("train_samples_per_s", "samples/s") for "Throughput [samples/s]": a measure's key and unit."""
    name, unit = re.fullmatch(r"(.+) \[(.+)\]", label).groups()
    return STAT_LABELS.get(name) or {"samples/s": "train_samples_per_s", "tokens/s": "train_tokens_per_s"}[unit], unit


def assert_cell(td, expected, key: str) -> None:
    """The cell shows `expected` (a number, or nothing when the summary has null)."""
    if expected is None:
        assert "data-value" not in td.attrs and shown(td) == "—", key
    else:
        assert_shows(td, expected, key)


def assert_stat(cells: dict, prefix: str, stat: dict, key: str, scale: float = 1.0) -> None:
    for part in ("mean", "ci_low", "ci_high"):
        value = stat[part]
        assert_cell(cells[f"{prefix}{part}"], None if value is None else value / scale, f"{key} {part}")


def comparison_rows(dom: Element) -> list[tuple[str, dict]]:
    """The comparisons table's rows in order (an arm has a row per measure): (row header, {key: <td>})."""
    body = dom.find("table", id="comparisons").find("tbody")
    return [
        (tr.find("th").text(), {td.attrs["data-key"]: td for td in tr.find_all("td")}) for tr in body.find_all("tr")
    ]


def assert_at_best_table_equals_the_summary(dom: Element, summary: dict) -> dict:
    """Every measure's mean and interval per arm, as the summary has them; the table's rows."""
    rows = table_rows(dom, "at-best")
    seen = set()
    for label, cells in rows.items():
        key, unit = stat_key(label)
        seen.add(key)
        for arm, entry in summary["arms"].items():
            assert_stat(cells, f"{arm}:", entry["at_best"][key], f"{arm} {key}", UNIT_SCALES.get(unit, 1.0))
    assert seen == set(next(iter(summary["arms"].values()))["at_best"])
    return rows


def assert_comparisons_table_equals_the_summary(dom: Element, summary: dict) -> list[tuple[str, dict]]:
    """Each arm against the reference, per measure: difference, Welch's test, sample sizes, the ratio of
    best learning rates; the table's rows."""
    rows = comparison_rows(dom)
    assert [header for header, _ in rows] == [f"{c['arm']} − {c['reference']}" for c in summary["comparisons"]]
    assert {c["metric"] for c in summary["comparisons"]} == set(next(iter(summary["arms"].values()))["at_best"])
    for comparison, (_, cells) in zip(summary["comparisons"], rows):
        key = f"{comparison['arm']} {comparison['metric']}"
        measure, unit = stat_key(shown(cells["metric"]))
        assert measure == comparison["metric"], key
        assert_stat(cells, "difference_", comparison["difference"], key, UNIT_SCALES.get(unit, 1.0))
        for part in ("t", "p", "df"):
            assert_cell(cells[f"welch_{part}"], comparison["welch"][part], f"{key} {part}")
        assert_cell(cells["n_arm"], comparison["n"][0], key)
        assert_cell(cells["n_reference"], comparison["n"][1], key)
        if comparison["metric"] == "eval_loss":  # the learning-rate ratio, once per arm
            assert_shows(cells["learning_rate_ratio"], comparison["learning_rate_ratio"], key)
            assert_shows(cells["ratio_resolution"], comparison["ratio_resolution"], key)
        else:
            assert shown(cells["learning_rate_ratio"]) == ""
    return rows
