"""The report's comparison section, from the compare rule's results/compare/summary.json.

A synthetic 50-run sweep (tests/helpers/comparison.py: its summary computed with scipy from the runs) is
rendered once; the HTML is parsed with html.parser and every number of the section is checked against
summary.json, read back here with json, through the cells' exact values (data-value). Without a sweep the
report says the comparison rests on one seed and hand-chosen learning rates.
"""

import json
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from helpers.comparison import (
    SWEEP_RUN_COUNT,
    built_sweep_report,
    report_paths,
    summary_for,
    sweep_runs,
    write_compare_outputs,
)
from helpers.comparison_html import (
    UNIT_SCALES,
    assert_at_best_table_equals_the_summary,
    assert_cell,
    assert_comparisons_table_equals_the_summary,
    assert_stat,
    comparison_rows,
)
from helpers.html import assert_shows, parse_html, shown, table_rows
from helpers.report import BLOG_RUNS, FIXTURES, blog_config, built_blog_report, run_entry_script, scratch_dir

from ftcompare.errors import FtcompareError
from ftcompare.report.comparison import comparison_section as comparison_section_of
from ftcompare.report.comparison import learning_rate_text, read_summary
from ftcompare.report.figures import report_figures
from ftcompare.report.headline import base_eval_loss
from ftcompare.report.inputs import load_report_inputs


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sweep():
    outputs, results = built_sweep_report()
    return parse_html(outputs.html), read_json(results / "compare" / "summary.json"), outputs, results


def comparison_section(dom):
    return dom.find("section", id="comparison")


# --------------------------------------------------------------------------------------------
# With a sweep: the comparison leads


def test_the_comparison_comes_first_with_a_sweep(sweep):
    dom, summary, _, _ = sweep
    assert summary["sweep"] and len(summary["runs"]) == SWEEP_RUN_COUNT
    sections = [s.attrs["id"] for s in dom.find("main").children if not isinstance(s, str) and s.tag == "section"]
    assert sections[:2] == ["comparison", "glance"]
    assert dom.find("nav").find_all("a")[0].attrs["href"] == "#comparison"
    assert not dom.find_all(id="one-seed-caveat")
    assert f"{SWEEP_RUN_COUNT} runs" in comparison_section(dom).find("h2").text()


def test_learning_rate_tables_equal_the_summary(sweep):
    dom, summary, _, _ = sweep
    section = comparison_section(dom)
    assert [div.attrs["data-arm"] for div in section.find_all("div", cls="arm-rates")] == list(summary["arms"])
    for arm, entry in summary["arms"].items():
        table_id = section.find("div", cls="arm-rates", data_arm=arm).find("table").attrs["id"]
        rows = table_rows(dom, table_id)
        assert [float(rate) for rate in rows] == pytest.approx([p["learning_rate"] for p in entry["learning_rates"]])
        marked = []
        for (rate_text, cells), point in zip(rows.items(), entry["learning_rates"]):
            assert_stat(cells, "eval_loss_", point["eval_loss"], f"{arm} {rate_text}")
            assert_cell(cells["n"], point["eval_loss"]["n"], f"{arm} {rate_text} n")
            if "best" in shown(cells["mark"]):
                marked.append((float(rate_text), shown(cells["mark"])))
        assert len(marked) == 1 and math.isclose(marked[0][0], entry["best_learning_rate"]), arm
        edge = entry["best_on_edge"]
        assert (edge in marked[0][1]) if edge else ("grid" not in marked[0][1]), (arm, marked)
    # the fixture's QLoRA grid stops below its optimum: flagged in words in its table and the notes
    assert summary["arms"]["qlora"]["best_on_edge"] == "highest"
    notes = [li.text() for li in section.find("ul", cls="comparison-notes").find_all("li")]
    assert notes == summary["notes"]


def test_each_arms_best_rate_and_the_ratio_of_best_rates_are_stated(sweep):
    dom, summary, _, _ = sweep
    sentences = [li.text() for li in comparison_section(dom).find("ul", cls="rates").find_all("li")]
    for arm, entry in summary["arms"].items():
        said = next(s for s in sentences if s.startswith(f"{arm}: best learning rate"))
        rate = re.search(r"best learning rate (\S+) \(", said).group(1)
        assert math.isclose(float(rate), entry["best_learning_rate"])
    for comparison in [c for c in summary["comparisons"] if c["metric"] == "eval_loss"]:
        said = next(s for s in sentences if s.startswith(f"{comparison['arm']}'s best learning rate is"))
        ratio, resolution = re.search(r"is ([\d.,]+)× .* factor of ([\d.]+)", said).groups()
        assert math.isclose(float(ratio.replace(",", "")), comparison["learning_rate_ratio"], rel_tol=5e-3)
        assert math.isclose(float(resolution), comparison["ratio_resolution"], rel_tol=5e-3)


def test_at_best_table_equals_the_summary(sweep):
    dom, summary, _, _ = sweep
    rows = assert_at_best_table_equals_the_summary(dom, summary)
    # QLoRA measured no energy: its cells say so rather than showing a number
    assert shown(rows["Energy [kJ]"]["qlora:mean"]) == "—"
    headers = [th.text() for th in dom.find("table", id="at-best").find_all("th", scope="colgroup")]
    for arm, entry in summary["arms"].items():
        n = entry["at_best"]["eval_loss"]["n"]
        group = next(h for h in headers if h.startswith(f"{arm} "))
        assert f"lr {learning_rate_text(entry['best_learning_rate'])}" in group and f"{n} seeds" in group


def test_comparisons_table_equals_the_summary(sweep):
    dom, summary, _, _ = sweep
    rows = assert_comparisons_table_equals_the_summary(dom, summary)
    # the fixture's QLoRA measured no energy: no difference to give
    energy = next(
        c for (_, c), s in zip(rows, summary["comparisons"]) if s["arm"] == "qlora" and s["metric"] == "energy_j"
    )
    assert shown(energy["difference_mean"]) == "—"


def test_the_verdicts_lead_with_the_held_out_loss(sweep):
    dom, summary, _, _ = sweep
    section = comparison_section(dom)
    verdicts = [li.text() for li in section.find("ul", cls="comparison-verdicts").find_all("li")]
    assert verdicts == [c["verdict"] for c in summary["comparisons"] if c["metric"] == "eval_loss"]
    others = {
        li.attrs["data-comparison"]: [item.text() for item in li.find("ul").find_all("li")]
        for li in section.find("ul", cls="other-verdicts").iter()
        if li.tag == "li" and "data-comparison" in li.attrs
    }
    for pair, sentences in others.items():
        arm, reference = pair.split(" − ")
        expected = [
            c["verdict"]
            for c in summary["comparisons"]
            if (c["arm"], c["reference"]) == (arm, reference) and c["metric"] != "eval_loss"
        ]
        assert sentences == expected
    assert len(others) == len({c["arm"] for c in summary["comparisons"]})


def test_expected_best_and_every_run_equal_the_summary(sweep):
    dom, summary, _, _ = sweep
    rows = table_rows(dom, "expected-best")
    for arm, entry in summary["arms"].items():
        for point in entry["expected_best"]:
            assert_shows(rows[str(point["trials"])][arm], point["eval_loss"], f"{arm} {point['trials']}")
    assert len(rows) == max(len(entry["expected_best"]) for entry in summary["arms"].values())

    runs = table_rows(dom, "comparison-runs")
    assert sorted(runs) == sorted(run["run"] for run in summary["runs"])
    headers = dom.find("table", id="comparison-runs").find("thead").find_all("th", scope="col")
    units = {th.attrs["data-key"]: th.attrs["data-unit"] for th in headers}
    best = {entry["best_run"] for entry in summary["arms"].values()}
    for run in summary["runs"]:
        cells = runs[run["run"]]
        assert math.isclose(float(shown(cells["learning_rate"])), run["learning_rate"])
        for key in ("eval_loss", "final_train_loss", "train_runtime_s", "peak_memory_mb", "energy_j", "flops"):
            scale = UNIT_SCALES.get(units[key], 1.0)
            assert_cell(cells[key], None if run[key] is None else run[key] / scale, f"{run['run']} {key}")
        assert ("best" in shown(cells["best"])) == (run["run"] in best)
    assert units["energy_j"] == "kJ" and units["flops"] == "TFLOP"  # the fixture's runs took ~7e12 to 1e13 FLOP


def test_fairness_table_flags_the_differing_settings_in_words(sweep):
    dom, summary, _, _ = sweep
    rows = table_rows(dom, "fairness")
    assert list(rows) == [row["key"] for row in summary["fairness"]]
    for row in summary["fairness"]:
        flag = shown(rows[row["key"]]["differs"])
        assert flag == ("≠ differs" if row["differs"] else "same"), row
        for arm in summary["arms"]:
            text = shown(rows[row["key"]][arm])
            assert text == "not set" if arm not in row["values"] else text != "not set"
    differing = [row["key"] for row in summary["fairness"] if row["differs"]]
    assert "lora.r" in differing and "training.per_device_train_batch_size" not in differing
    listed = [code.text() for code in comparison_section(dom).find("p", cls="differs-list").find_all("code")]
    assert listed == differing
    batch = rows["training.per_device_train_batch_size"]
    assert [shown(batch[arm]) for arm in summary["arms"]] == ["4"] * len(summary["arms"])
    assert shown(rows["training.learning_rate"]["lora"]) == learning_rate_text(
        summary["arms"]["lora"]["config"]["training.learning_rate"]
    )


def test_compare_figures_are_embedded_and_link_their_files(sweep):
    dom, _, outputs, _ = sweep
    for name in ["loss_vs_learning_rate", "expected_best", "loss_vs_flops"]:
        figure = comparison_section(dom).find("figure", id=f"figure-{name}")
        assert figure.find("img").attrs["src"].startswith("data:image/png;base64,")
        links = [a.attrs["href"] for a in figure.find("figcaption").find_all("a")]
        assert [Path(link).suffix for link in links] == [".pdf", ".svg", ".png"]
        for link in links:
            assert (outputs.html.parent / link).resolve().is_file(), link
        assert "nats/token" in figure.find("figcaption").text()
    files = comparison_section(dom).find("p", cls="files").find_all("code")
    assert {Path(code.text()).name for code in files} >= {"at_best.tex", "comparisons.csv", "fairness.tex"}


def test_at_50_runs_the_per_run_detail_folds_away(sweep):
    dom, summary, _, _ = sweep
    folds = dom.find_all("details", cls="per-run")
    folded_ids = {element.attrs.get("id") for fold in folds for element in fold.iter()}
    assert {"headline", "memory-plan"} <= folded_ids
    assert len(table_rows(dom, "headline")) == len(summary["runs"]) + 1  # the base model and every run
    assert any(fold.find_all("article", cls="prompt") for fold in folds)
    assert any(fold.find_all("figure") for fold in folds)
    assert not comparison_section(dom).find_all("details", cls="per-run")


def test_at_50_runs_the_per_run_figures_stay_legible(sweep):
    _, summary, _, results = sweep
    names = [run["run"] for run in summary["runs"]]
    paths = report_paths(results, names, ["base"], None)
    runs = load_report_inputs(paths, names, {}, "", None, "").runs
    specs = {spec.name: spec for spec in report_figures(runs, base_eval_loss(runs))[0]}
    try:
        loss = specs["training_loss_vs_step"].figure
        legend = [text.get_text() for text in loss.axes[0].get_legend().get_texts()]
        assert sorted(legend) == ["LoRA", "QLoRA", "base model: eval loss before training", "full fine-tune"]
        assert "a colour per method" in specs["training_loss_vs_step"].caption
        cost = specs["cost_per_run"].figure
        assert [t.get_text() for t in cost.axes[0].get_yticklabels()] == names  # a labelled row per run
        assert cost.get_figheight() >= 0.12 * len(names)
    finally:
        for spec in specs.values():
            plt.close(spec.figure)


# --------------------------------------------------------------------------------------------
# Without a sweep: one seed, hand-chosen learning rates, and the way to the sweep


def blog_runs_as_summary_runs() -> list[dict]:
    runs = []
    for name in BLOG_RUNS:
        metrics = read_json(FIXTURES / "blog_mi250" / "runs" / name / "metrics.json")
        keys = ["eval_loss", "final_train_loss", "mean_train_loss", "train_runtime_s", "train_samples_per_s"]
        keys += ["train_tokens_per_s", "peak_memory_mb", "energy_j"]
        runs.append(
            {
                "run": name,
                "method": metrics["method"],
                "arm": metrics["method"],
                "learning_rate": metrics["learning_rate"],
                "seed": 42,
                "grid": {},
                "from_sweep": False,
                **{key: metrics.get(key) for key in keys},
                "tokens_seen": None,
                "flops": None,
            }
        )
    return runs


@pytest.fixture(scope="module")
def no_sweep(tmp_path_factory):
    """The blog fixture's two hand-written runs with the compare rule's summary, built by scripts/report.py."""
    summary = summary_for(blog_runs_as_summary_runs(), reference="full", sweep=False)
    summary["notes"].append("A <script>alert(1)</script> in a note is text.")
    compare = tmp_path_factory.mktemp("compare")
    write_compare_outputs(compare, summary)
    config = blog_config()
    paths = report_paths(FIXTURES / "blog_mi250", BLOG_RUNS, ["base", *BLOG_RUNS], compare)
    out = scratch_dir() / "report"
    done = run_entry_script(paths, BLOG_RUNS, config, out)
    assert done.returncode == 0, done.stderr + (out / "report.log").read_text()
    return parse_html(out / "report.html"), read_json(compare / "summary.json")


def test_without_a_sweep_the_report_says_it_rests_on_one_seed_and_points_to_the_sweep(no_sweep):
    dom, summary = no_sweep
    assert summary["sweep"] is False and summary["single_seed"] is True
    caveat = dom.find("section", id="glance").find("p", id="one-seed-caveat").text()
    assert "one seed" in caveat and "hand-chosen learning rates" in caveat
    assert "config/sweep.yaml" in caveat and "docs/sweeps.md" in caveat
    sections = [s.attrs["id"] for s in dom.find("main").children if not isinstance(s, str) and s.tag == "section"]
    assert sections[:2] == ["glance", "comparison"]
    # the comparison section still shows what the summary has, with its one-seed note
    section = comparison_section(dom)
    assert section.attrs["data-sweep"] == "false"
    notes = [li.text() for li in section.find("ul", cls="comparison-notes").find_all("li")]
    assert "One seed per learning rate: no intervals." in notes
    rows = table_rows(dom, "at-best")
    assert_shows(
        rows["Held-out loss [nats/token]"]["lora:mean"], summary["arms"]["lora"]["at_best"]["eval_loss"]["mean"]
    )
    assert shown(rows["Held-out loss [nats/token]"]["lora:ci_low"]) == "—"  # one seed: no interval
    header, difference = comparison_rows(dom)[0]
    assert header == "lora − full" and summary["comparisons"][0]["metric"] == "eval_loss"
    assert_shows(difference["difference_mean"], summary["comparisons"][0]["difference"]["mean"])
    assert "data-value" not in difference["welch_p"].attrs


def test_the_summary_is_text_to_the_report_not_markup(no_sweep):
    dom, _ = no_sweep
    assert not dom.find_all("script")
    notes = [li.text() for li in comparison_section(dom).find("ul", cls="comparison-notes").find_all("li")]
    assert "A <script>alert(1)</script> in a note is text." in notes


def test_a_report_without_a_compare_summary_still_says_one_seed():
    dom = parse_html(built_blog_report().html)
    assert "config/sweep.yaml" in dom.find("p", id="one-seed-caveat").text()
    assert not dom.find_all("section", id="comparison")


# --------------------------------------------------------------------------------------------
# Pieces


@pytest.mark.parametrize(
    ("rate", "text"),
    [(3e-4, "3e-4"), (2.5e-5, "2.5e-5"), (1e-2, "1e-2"), (0.3, "3e-1"), (1.0, "1"), (None, "—")],
)
def test_learning_rates_are_written_as_papers_write_them(rate, text):
    assert learning_rate_text(rate) == text
    if rate is not None:
        assert math.isclose(float(text), rate)


def test_a_file_that_is_not_a_compare_summary_is_refused_naming_it(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"sweep": true, "arms": {}}', encoding="utf-8")
    with pytest.raises(FtcompareError, match=r"summary\.json: not a compare summary, it lacks confidence"):
        read_summary(path)
    path.write_text('{"sweep": NaN}', encoding="utf-8")
    with pytest.raises(FtcompareError, match="summary.json: not valid JSON"):
        read_summary(path)


def test_one_arm_and_no_figures_give_a_section_without_a_comparison(tmp_path):
    summary = summary_for([run for run in sweep_runs() if run["arm"] == "lora"], reference="full")
    section = comparison_section_of(summary, None, tmp_path)
    assert summary["reference_arm"] is None and summary["comparisons"] == []
    assert section.comparisons is None and section.verdicts == [] and section.other_verdicts == {}
    assert section.rate_sentences == ["lora: best learning rate 3e-3 (of 6 rates from 1e-4 to 3e-2)."]
    assert section.figures == [] and len(section.missing_figures) == 3 and section.table_files == []
    assert [arm.arm for arm in section.learning_rates] == ["lora"]
