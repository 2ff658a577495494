"""Learning and forgetting (ftcompare.learning) computed by hand, and the report's use of them: the headline
columns, the per-set table (CSV, LaTeX) and the learning-forgetting figure (PDF, SVG, PNG)."""

import csv
import dataclasses
import json

import pytest
from helpers.report import CPU_RUNS, cpu_config, fixture_paths, scratch_dir

from ftcompare.config import config_hash
from ftcompare.errors import FtcompareError
from ftcompare.learning import learning_by_run, learning_forgetting, read_evaluation
from ftcompare.report.build import build_report
from ftcompare.report.inputs import load_report_inputs
from ftcompare.report.learning import learning_forgetting_figure, learning_table

ROLES = {"heldout": "target", "task2": "target", "wiki": "source", "docs": "source"}


def evaluation(model, method, **losses):
    return {
        "model": model,
        "method": method,
        "sets": {name: {"role": ROLES[name], "loss": loss, "perplexity": None} for name, loss in losses.items()},
    }


BASE = evaluation("base", "base", heldout=2.0, task2=3.0, wiki=1.5, docs=1.0)
LORA = evaluation("lora", "lora", heldout=1.5, task2=2.75, wiki=1.625, docs=1.0)
FULL = evaluation("full", "full", heldout=1.25, task2=2.5, wiki=2.0, docs=1.5)


def test_learning_is_base_minus_run_on_targets_and_forgetting_run_minus_base_on_sources():
    lora = learning_forgetting(BASE, LORA)
    assert lora.learning == {"heldout": 0.5, "task2": 0.25}
    assert lora.forgetting == {"wiki": 0.125, "docs": 0.0}
    assert lora.mean_learning == 0.375 and lora.mean_forgetting == 0.0625
    full = learning_forgetting(BASE, FULL)
    assert (full.mean_learning, full.mean_forgetting) == (0.625, 0.5)
    assert full.method == "full" and full.model == "full"


def test_a_run_that_got_worse_on_its_task_has_negative_learning():
    worse = evaluation("bad", "lora", heldout=2.5, wiki=1.25)
    result = learning_forgetting(BASE, worse)
    assert result.learning == {"heldout": -0.5} and result.forgetting == {"wiki": -0.25}


def test_a_missing_loss_leaves_its_change_and_the_mean_empty_and_a_set_only_one_has_is_left_out():
    run = {"model": "lora", "method": "lora", "sets": {**LORA["sets"], "heldout": {"role": "target", "loss": None}}}
    run["sets"]["new"] = {"role": "source", "loss": 1.0}
    result = learning_forgetting(BASE, run)
    assert result.learning == {"heldout": None, "task2": 0.25}
    assert result.mean_learning is None
    assert "new" not in result.forgetting and result.mean_forgetting == 0.0625


def test_no_source_set_means_no_forgetting():
    result = learning_forgetting(evaluation("base", "base", heldout=2.0), evaluation("lora", "lora", heldout=1.0))
    assert result.forgetting == {} and result.mean_forgetting is None and result.mean_learning == 1.0


def test_a_set_whose_role_differs_between_results_is_refused():
    changed = {**LORA, "sets": {**LORA["sets"], "wiki": {"role": "target", "loss": 1.0}}}
    with pytest.raises(FtcompareError, match="'wiki' is a source set for the base model and a target set for lora"):
        learning_forgetting(BASE, changed)


def test_learning_by_run_needs_the_base_model():
    assert learning_by_run([]) == {}
    assert set(learning_by_run([BASE, LORA, FULL])) == {"lora", "full"}
    with pytest.raises(FtcompareError, match="without the base model"):
        learning_by_run([LORA])


def test_read_evaluation_refuses_a_file_without_roles(tmp_path):
    path = tmp_path / "lora.json"
    path.write_text(json.dumps({"model": "lora", "sets": {"heldout": {"loss": 1.0}}}))
    with pytest.raises(FtcompareError, match="'heldout' has no role"):
        read_evaluation(path)
    path.write_text(json.dumps(LORA))
    assert read_evaluation(path) == LORA


def test_the_table_has_a_row_per_model_with_losses_and_changes_the_base_at_zero():
    table = learning_table([BASE, LORA, FULL], learning_by_run([BASE, LORA, FULL]))
    keys = [column.key for column in table.columns]
    assert keys[:4] == ["model", "method", "heldout_loss", "heldout_learning"]
    assert "wiki_forgetting" in keys and keys[-2:] == ["mean_learning", "mean_forgetting"]
    assert [table.value(i, "model") for i in range(3)] == ["base", "lora", "full"]
    assert table.value(0, "wiki_forgetting") == 0.0 and table.value(0, "wiki_loss") == 1.5
    assert table.value(1, "task2_learning") == 0.25 and table.value(2, "mean_forgetting") == 0.5


def test_the_figure_plots_a_point_per_run_and_the_base_at_the_origin():
    spec, why = learning_forgetting_figure(learning_by_run([BASE, LORA, FULL]))
    assert why == "" and spec.name == "learning_forgetting"
    axes = spec.figure.axes[0]
    points = sorted(tuple(map(float, c.get_offsets()[0])) for c in axes.collections)
    assert points == [(0.0, 0.0), (0.0625, 0.375), (0.5, 0.625)]
    assert {text.get_text() for text in axes.texts} == {"base", "lora", "full"}
    assert "Forgetting" in axes.get_xlabel() and "Learning" in axes.get_ylabel()
    assert "Biderman" in spec.caption


def test_kept_checkpoints_get_their_own_learning_and_forgetting_a_table_row_and_a_path_in_the_figure():
    at_step_2 = evaluation("lora", "lora", heldout=1.75, task2=3.0, wiki=1.5, docs=1.0)
    lora = {**LORA, "checkpoints": [{"step": 4, "sets": LORA["sets"]}, {"step": 2, "sets": at_step_2["sets"]}]}
    result = learning_forgetting(BASE, lora)
    assert [step for step, _ in result.checkpoints] == [2, 4]
    assert (result.checkpoints[0][1].mean_learning, result.checkpoints[0][1].mean_forgetting) == (0.125, 0.0)
    learning = learning_by_run([BASE, lora, FULL])
    table = learning_table([BASE, lora, FULL], learning)
    models = [table.value(i, "model") for i in range(len(table.rows))]
    assert models == ["base", "lora @ step 2", "lora @ step 4", "lora", "full"]
    assert table.value(1, "heldout_learning") == 0.25
    spec, _ = learning_forgetting_figure(learning)
    axes = spec.figure.axes[0]
    path = [line for line in axes.lines if len(line.get_xdata()) > 2]
    assert len(path) == 1
    assert list(zip(path[0].get_xdata(), path[0].get_ydata())) == [(0, 0), (0, 0.125), (0.0625, 0.375), (0.0625, 0.375)]
    assert "checkpoints" in spec.caption


def test_no_figure_without_a_source_set_and_a_sentence_saying_why():
    only_targets = [evaluation("base", "base", heldout=2.0), evaluation("lora", "lora", heldout=1.0)]
    spec, why = learning_forgetting_figure(learning_by_run(only_targets))
    assert spec is None and "needs a source set" in why


def test_the_report_shows_learning_and_forgetting_and_exports_them(tmp_path):
    """The committed CPU fixture results, with evaluate results for its base and runs."""
    config = cpu_config()
    evaluations = [evaluation("base", "base", heldout=2.0, wiki=1.5)] + [
        evaluation(run, "lora" if run.startswith("lora") else "full", heldout=2.0 - 0.25 * (i + 1), wiki=1.5 + 0.1 * i)
        for i, run in enumerate(CPU_RUNS)
    ]
    paths = []
    for result in evaluations:
        paths.append(tmp_path / f"{result['model']}.json")
        paths[-1].write_text(json.dumps(result))
    inputs = load_report_inputs(
        dataclasses.replace(fixture_paths("embedded_cpu", CPU_RUNS), evaluations=paths),
        CPU_RUNS,
        config,
        config_hash(config),
        config["report"]["reference"],
        config["report"]["title"],
    )
    out = scratch_dir() / "report"
    outputs = build_report(inputs, out / "report.html", out / "figures", out / "tables")
    for extension in ("pdf", "svg", "png"):
        assert (out / "figures" / f"learning_forgetting.{extension}").stat().st_size > 0
    assert {"learning_forgetting.csv", "learning_forgetting.tex"} <= {path.name for path in outputs.tables}
    rows = list(csv.DictReader((out / "tables" / "learning_forgetting.csv").open(encoding="utf-8")))
    assert [row["model"] for row in rows] == ["base", *CPU_RUNS]
    assert float(rows[3]["heldout_learning"]) == pytest.approx(0.75)
    assert "\\toprule" in (out / "tables" / "learning_forgetting.tex").read_text()
    headline = {row["model"]: row for row in csv.DictReader((out / "tables" / "headline.csv").open(encoding="utf-8"))}
    assert float(headline["base"]["learning"]) == 0 and float(headline["base"]["forgetting"]) == 0
    assert float(headline["lora"]["learning"]) == pytest.approx(0.25)
    assert float(headline["full"]["forgetting"]) == pytest.approx(0.2)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="learning-forgetting"' in html and 'id="learning-table"' in html
    assert 'id="figure-learning_forgetting"' in html
