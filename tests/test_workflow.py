"""The workflow end to end: a tiny study in a temporary folder, run by the real snakemake CLI, once per
scenario config in tests/scenarios/ (config_<name>.yaml, as the Snakemake catalog's .test/config_*):
every test that takes `study` runs for each, and reads the runs from the scenario's config."""

import csv
import json
import shutil
import zipfile
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from helpers.strict_json import loads_strict, strict_json_problems
from helpers.workflow import SCENARIOS, copy_workflow, planned_jobs, read_jsonl, snakemake

from conftest import REPO
from ftcompare.adapters import ADAPTER_METHODS
from ftcompare.checkpoints import FINISHED_FILE
from ftcompare.config import run_settings, validate_config

pytestmark = pytest.mark.slow

SCENARIO_FILES = sorted(SCENARIOS.glob("config_*.yaml"))


class Study(NamedTuple):
    scenario: str  # the name after config_
    workdir: Path  # a copy of the workflow, its results/ made with config/e2e.yaml (the scenario's file)
    config: dict  # the scenario's config, validated (defaults filled in)


def logged_steps(max_steps: int, logging_steps: int) -> list[int]:
    """The steps log_history.csv has a loss for: the first, every logging_steps-th, and the last."""
    return sorted({1, *range(logging_steps, max_steps + 1, logging_steps), max_steps})


def lora_trainable_params(settings: dict, embedded: dict) -> int:
    """LoRA's (and DoRA's and QLoRA's) trainable parameters on the embedded Llama, PEFT's default targets q_proj and
    v_proj: r x (in + out) per adapted matrix, plus DoRA's magnitude vector of `out`."""
    assert settings["lora"]["target_modules"] is None
    hidden = embedded["hidden_size"]
    v_out = embedded["num_key_value_heads"] * hidden // embedded["num_attention_heads"]
    per_layer = settings["lora"]["r"] * ((hidden + hidden) + (hidden + v_out))
    if settings["lora"]["use_dora"]:
        per_layer += hidden + v_out
    return embedded["num_hidden_layers"] * per_layer


@pytest.fixture(scope="module", params=SCENARIO_FILES, ids=lambda path: path.stem.removeprefix("config_"))
def study(request, tmp_path_factory):
    """One tiny study per scenario, run once for the whole module."""
    scenario = request.param.stem.removeprefix("config_")
    workdir = copy_workflow(tmp_path_factory.mktemp(f"study-{scenario}"))
    shutil.copy(request.param, workdir / "config" / "e2e.yaml")
    snakemake(workdir, "--cores", "2", "--configfile", "config/e2e.yaml")
    raw = yaml.safe_load(request.param.read_text(encoding="utf-8"))
    return Study(scenario, workdir, validate_config(raw, search_dirs=[REPO]))


def test_there_are_at_least_two_scenarios_and_one_packs_with_a_third_run():
    assert {"config_default.yaml", "config_packing.yaml"} <= {path.name for path in SCENARIO_FILES}
    packing = yaml.safe_load((SCENARIOS / "config_packing.yaml").read_text(encoding="utf-8"))
    assert packing["training"]["packing"] is True and len(packing["runs"]) >= 3
    default = yaml.safe_load((SCENARIOS / "config_default.yaml").read_text(encoding="utf-8"))
    assert {run["method"] for run in default["runs"].values()} == {"lora", "qlora", "full"}  # the three arms


def test_every_output_exists_and_holds_sane_values(study):
    results, config = study.workdir / "results", study.config
    runs = list(config["runs"])
    card = json.loads((results / "data" / "data_card.json").read_text())
    assert card["source"] == "embedded"
    assert card["rows"]["train"] + card["rows"]["eval"] == config["data"]["embedded_rows"]
    assert (results / "models" / "base" / "config.json").is_file()

    metrics = {}
    for run in runs:
        settings = run_settings(config, run)
        method = settings["method"]
        run_dir = results / "runs" / run
        metrics[run] = m = json.loads((run_dir / "metrics.json").read_text())
        assert m["run"] == run and m["method"] == method
        assert m["train_steps"] == settings["training"]["max_steps"]
        assert 0 < m["trainable_params"] <= m["total_params"]
        for key in [
            "train_runtime_s",
            "train_samples_per_s",
            "train_tokens_per_s",
            "final_train_loss",
            "mean_train_loss",
            "eval_loss",
            "eval_loss_before_training",
            "peak_memory_mb",
        ]:
            assert isinstance(m[key], float) and m[key] > 0, key
        assert m["peak_memory_source"].startswith("process RSS")
        assert m["options"]["packing"] is settings["training"]["packing"]
        rows = list(csv.DictReader((run_dir / "log_history.csv").open()))
        expected_steps = logged_steps(settings["training"]["max_steps"], settings["training"]["logging_steps"])
        assert [int(r["step"]) for r in rows] == expected_steps
        assert all(float(r["loss"]) > 0 and float(r["elapsed_s"]) >= 0 for r in rows)
        assert float(rows[-1]["loss"]) == pytest.approx(m["final_train_loss"])
        assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
        telemetry = list(csv.DictReader((run_dir / "telemetry.csv").open()))
        assert telemetry and {"train", "load"} <= {r["phase"] for r in telemetry}
        assert all(float(r["rss_mb"]) > 0 for r in telemetry)
        assert json.loads((run_dir / "telemetry.json").read_text())["sample_count"] >= 1
        weights = "adapter_model.safetensors" if method in ADAPTER_METHODS else "model.safetensors"
        assert (run_dir / "model" / weights).is_file()
        if method in ADAPTER_METHODS:
            assert m["trainable_params"] == lora_trainable_params(settings, config["base_model"]["embedded"]), run
        if method == "qlora":
            assert m["quantization"]["bnb_4bit_quant_type"] == settings["quantization"]["bnb_4bit_quant_type"]
        else:
            assert m["quantization"] is None

    lora_runs = [run for run in runs if config["runs"][run]["method"] in ADAPTER_METHODS]
    full_runs = [run for run in runs if config["runs"][run]["method"] == "full"]
    assert lora_runs and full_runs
    for full in full_runs:
        assert metrics[full]["trainable_params"] == metrics[full]["total_params"]
        assert all(metrics[lora]["trainable_params"] < metrics[full]["trainable_params"] for lora in lora_runs)
        # The base and the adapter: a 4-bit base counts its parameters, not its packed bytes.
        assert all(metrics[lora]["total_params"] > metrics[full]["total_params"] for lora in lora_runs)
    # The same base model and held-out set before any training: one loss for every run that trains the
    # base as it is; a QLoRA run's is the 4-bit base's, close to it.
    as_is = [run for run in runs if config["runs"][run]["method"] != "qlora"]
    first = metrics[as_is[0]]["eval_loss_before_training"]
    assert all(metrics[run]["eval_loss_before_training"] == pytest.approx(first) for run in as_is)
    assert all(metrics[run]["eval_loss_before_training"] == pytest.approx(first, rel=0.05) for run in runs)

    prompts = yaml.safe_load((REPO / "config" / "prompts.yaml").read_text())["prompts"]
    for model in ["base", *runs]:
        records = read_jsonl(results / "generations" / f"{model}.jsonl")
        assert [r["prompt"] for r in records] == prompts
        max_new_tokens = config["generation"]["max_new_tokens"]
        assert all(r["model"] == model and 1 <= r["new_tokens"] <= max_new_tokens and r["seconds"] > 0 for r in records)
        assert records[0]["formatted_prompt"].startswith("<s>[INST] What do you think")

    # The plan, made from the config before anything ran, counts what the runs then counted.
    plan = json.loads((results / "plan" / "plan.json").read_text())
    assert list(plan["runs"]) == runs
    for run in runs:
        assert plan["runs"][run]["parameters"] == {
            "total": metrics[run]["total_params"],
            "trainable": metrics[run]["trainable_params"],
        }, run
        assert plan["runs"][run]["per_device_bytes"] > 0
    assert (results / "plan" / "plan.csv").read_text().startswith("run,method,status,")

    html = (results / "report" / "report.html").read_text()
    assert all(run in html for run in runs)
    assert 'id="memory-plan"' in html and (results / "report" / "tables" / "memory_plan.csv").is_file()
    logs = ["plan.log", "base_model.log", "prepare_data.log", "generate/base.log", "report.log"]
    logs += [f"train/{run}.log" for run in runs] + [f"generate/{run}.log" for run in runs]
    for log in logs:
        assert (results / "logs" / log).is_file(), log
    for run in runs:
        assert (results / "benchmarks" / "train" / f"{run}.tsv").is_file(), run


def test_every_model_is_scored_on_every_evaluation_set_and_the_report_shows_learning_and_forgetting(study):
    results, config = study.workdir / "results", study.config
    runs = list(config["runs"])
    roles = {"heldout": "target", **{name: entry["role"] for name, entry in config["eval_sets"].items()}}
    assert roles == {"heldout": "target", "pretraining": "source"}  # the default: held-out pretraining text
    card = loads_strict((results / "data" / "eval_sets" / "pretraining.json").read_text())
    assert card["source"] == "embedded" and card["rows"]["kept"] == 200
    scored = {}
    for model in ["base", *runs]:
        scored[model] = loads_strict((results / "evaluate" / f"{model}.json").read_text())
        sets = scored[model]["sets"]
        assert {name: entry["role"] for name, entry in sets.items()} == roles, model
        assert (
            sets["pretraining"]["rows"] == 200
            and sets["heldout"]["rows"] == json.loads((results / "data" / "data_card.json").read_text())["rows"]["eval"]
        )
        for entry in sets.values():
            assert entry["loss"] > 0 and entry["tokens"] > entry["rows"] and entry["perplexity"] > 1
        assert (results / "evaluate" / f"{model}.telemetry.json").is_file()
        assert (results / "logs" / "evaluate" / f"{model}.log").is_file()
        assert (results / "benchmarks" / "evaluate" / f"{model}.tsv").is_file()
    metrics = {run: json.loads((results / "runs" / run / "metrics.json").read_text()) for run in runs}
    # The held-out loss is training's own: the base's before training, a LoRA or full run's after it.
    for run in runs:
        if config["runs"][run]["method"] != "qlora":
            base_loss = metrics[run]["eval_loss_before_training"]
            assert scored["base"]["sets"]["heldout"]["loss"] == pytest.approx(base_loss, rel=1e-3), run
            assert scored[run]["sets"]["heldout"]["loss"] == pytest.approx(metrics[run]["eval_loss"], rel=1e-3), run
    # The pretraining text is what the embedded base handled best: its loss there is below the task's.
    assert scored["base"]["sets"]["pretraining"]["loss"] < scored["base"]["sets"]["heldout"]["loss"]

    tables, figures = results / "report" / "tables", results / "report" / "figures"
    headline = {row["model"]: row for row in csv.DictReader((tables / "headline.csv").open(encoding="utf-8"))}
    assert float(headline["base"]["learning"]) == 0 and float(headline["base"]["forgetting"]) == 0
    base_sets = scored["base"]["sets"]
    for run in runs:
        run_sets = scored[run]["sets"]
        learning = base_sets["heldout"]["loss"] - run_sets["heldout"]["loss"]
        forgetting = run_sets["pretraining"]["loss"] - base_sets["pretraining"]["loss"]
        assert float(headline[run]["learning"]) == pytest.approx(learning, abs=1e-3), run
        assert float(headline[run]["forgetting"]) == pytest.approx(forgetting, abs=1e-3), run
    per_set = list(csv.DictReader((tables / "learning_forgetting.csv").open(encoding="utf-8")))
    # With checkpoints.keep (the packing scenario) a run's kept checkpoints are scored too: a row each, before its own.
    expected_rows = ["base"]
    for run in runs:
        expected_rows += [f"{run} @ step {entry['step']}" for entry in scored[run].get("checkpoints") or []] + [run]
    assert [row["model"] for row in per_set] == expected_rows
    assert (tables / "learning_forgetting.tex").read_text().count("\\midrule") >= 1
    assert all((figures / f"learning_forgetting.{ext}").stat().st_size > 0 for ext in ("pdf", "svg", "png"))
    html = (results / "report" / "report.html").read_text()
    assert 'id="learning-forgetting"' in html and 'id="figure-learning_forgetting"' in html


def test_every_run_has_its_weight_analysis_and_the_report_shows_it(study):
    """results/analysis/<run>.csv and .json: the adapted matrices of an adapter run (PEFT's default q_proj and
    v_proj), every attention and MLP linear of a full run; a change of rank at most r; the report's section."""
    results, config = study.workdir / "results", study.config
    layers = config["base_model"]["embedded"]["num_hidden_layers"]
    for run in config["runs"]:
        settings = run_settings(config, run)
        document = json.loads((results / "analysis" / f"{run}.json").read_text())
        rows = list(csv.DictReader((results / "analysis" / f"{run}.csv").open()))
        assert document["run"] == run and document["settings"]["k"] == config["weight_analysis"]["k"]
        assert document["seconds"] > 0 and document["summary"]["modules"] == len(rows) == len(document["modules"])
        kinds = {row["module_type"] for row in rows}
        if settings["method"] in ADAPTER_METHODS:
            assert kinds == {"q_proj", "v_proj"} and len(rows) == 2 * layers, run
            if not settings["lora"]["use_dora"]:  # DoRA rescales each column of the whole weight
                assert all(0 < int(row["rank90"]) <= settings["lora"]["r"] for row in rows), run
        else:
            assert len(kinds) == 7 and len(rows) == 7 * layers, run
        assert all(float(row["relative_change"]) > 0 for row in rows), run
        assert (results / "logs" / "analyse_weights" / f"{run}.log").is_file()
        assert (results / "benchmarks" / "analyse_weights" / f"{run}.tsv").is_file()
    html = (results / "report" / "report.html").read_text()
    assert 'id="weights"' in html and 'id="weight-summary"' in html
    for name in ("weight_relative_change", "weight_rank90", "weight_intruders", "weight_change_spectrum"):
        assert f'id="figure-{name}"' in html and (results / "report" / "figures" / f"{name}.pdf").is_file()
    weights_csv = (results / "report" / "tables" / "weights.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in weights_csv[1:]] == list(config["runs"])
    assert (results / "report" / "tables" / "weights.tex").is_file()


def test_a_finished_run_keeps_its_checkpoints_only_where_the_config_says_so(study):
    keep = study.config["checkpoints"]["keep"]
    for run in study.config["runs"]:
        folder = study.workdir / "results" / "checkpoints" / run
        assert (folder / FINISHED_FILE).is_file(), run
        assert bool(list(folder.glob("checkpoint-*"))) == keep, run


def test_the_models_generate_in_generation_dtype_else_the_training_dtype(study):
    dtype = study.config["generation"]["dtype"] or study.config["base_model"]["dtype"]
    for model in ["base", *study.config["runs"]]:
        log = (study.workdir / "results" / "logs" / "generate" / f"{model}.log").read_text(encoding="utf-8")
        assert f"{model}: generating in {dtype}" in log, model


def test_the_scenarios_cover_both_ways_of_finishing_with_checkpoints():
    configs = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in SCENARIO_FILES]
    kept = {config.get("checkpoints", {}).get("keep", False) for config in configs}
    assert kept == {True, False}
    assert {config.get("generation", {}).get("dtype") for config in configs} == {None, "bfloat16"}


def test_every_json_file_is_strict_json(study):
    """No NaN or Infinity in any *.json file or *.jsonl line the workflow wrote (Python's json writes
    them by default; other parsers refuse them)."""
    problems, documents = strict_json_problems(study.workdir / "results")
    assert problems == []
    runs = len(study.config["runs"])
    # At least each run's metrics and telemetry summary, and a line per prompt for each model.
    assert documents >= 2 * runs + (1 + runs)


def test_the_strict_parser_refuses_what_json_dumps_writes_for_nan_and_infinity(tmp_path):
    for value in (float("nan"), float("inf"), float("-inf")):
        text = json.dumps({"loss": value})
        assert json.loads(text)["loss"] != 0  # what Python's own parser lets through
        with pytest.raises(ValueError, match="is not JSON"):
            loads_strict(text)
    assert loads_strict('{"loss": null, "x": [1.5e300, -2]}') == {"loss": None, "x": [1.5e300, -2]}
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "metrics.json").write_text('{"eval_perplexity": Infinity}')
    (tmp_path / "generations.jsonl").write_text('{"a": 1}\n{"b": NaN}\n')
    assert strict_json_problems(tmp_path) == (
        ["runs/metrics.json: Infinity is not JSON", "generations.jsonl:2: NaN is not JSON"],
        3,
    )


def test_a_second_run_does_nothing(study):
    result = snakemake(study.workdir, "--cores", "2", "--configfile", "config/e2e.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_reordered_config_file_reruns_nothing(study):
    workdir = study.workdir
    config = yaml.safe_load((workdir / "config" / "e2e.yaml").read_text())
    reordered = dict(reversed(list(config.items())))
    (workdir / "config" / "reordered.yaml").write_text(yaml.safe_dump(reordered, sort_keys=False))
    assert planned_jobs(workdir, "--configfile", "config/reordered.yaml") == {}


def test_a_changed_lora_option_reruns_only_that_run_what_reads_its_model_the_plan_compare_and_report(study):
    workdir = study.workdir
    config = yaml.safe_load((workdir / "config" / "e2e.yaml").read_text())
    config["runs"]["lora"]["lora"] = {"r": 4}
    (workdir / "config" / "changed.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_jobs(workdir, "--configfile", "config/changed.yaml")
    # The plan covers every run and takes seconds; the other runs read it as ancient(), so stay as they are.
    assert jobs == {
        "plan": 1,
        "train": 1,
        "generate": 1,
        "evaluate": 1,
        "analyse_weights": 1,
        "compare": 1,
        "report": 1,
        "all": 1,
    }
    plan = snakemake(workdir, "-n", "--cores", "2", "--configfile", "config/changed.yaml").stdout
    assert "wildcards: run=lora" in plan
    assert all(f"wildcards: run={run}" not in plan for run in config["runs"] if run != "lora")


@pytest.mark.parametrize(
    "changed", ["report/report.html.j2", "report/caption_figures.rst", "scripts/ftcompare/report/figures.py"]
)
def test_a_changed_template_or_report_code_reruns_only_the_report(study, changed):
    path = study.workdir / changed
    original = path.read_text()
    try:
        path.write_text(original + ("\n{# edited #}\n" if changed.endswith(".j2") else "\n"))
        assert planned_jobs(study.workdir, "--configfile", "config/e2e.yaml") == {"report": 1, "all": 1}
    finally:
        path.write_text(original)


def test_snakemake_report_builds(study):
    snakemake(study.workdir, "--configfile", "config/e2e.yaml", "--report", "results/snakemake-report.zip")
    with zipfile.ZipFile(study.workdir / "results" / "snakemake-report.zip") as archive:
        names = archive.namelist()
    assert any(name.endswith("report.html") for name in names)
    assert any("metrics.json" in name for name in names)
    # Snakemake stores each file as data/raw/<id>/<file name>: the evaluate results and the set's card.
    assert any(name.endswith("/base.json") for name in names) and any(name.endswith("/full.json") for name in names)
    assert any(name.endswith("/pretraining.json") for name in names)
    # results/analysis/<run>.csv (category Weights), the weight figures and the report's weights table.
    for run in study.config["runs"]:
        assert any(name.endswith(f"/{run}.csv") for name in names), run
    assert any(name.endswith("/weight_rank90.png") for name in names)
    assert any(name.endswith("/weights.csv") for name in names)


def test_lint_is_clean():
    result = snakemake(REPO, "--lint")
    assert "Lints for" not in result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


def test_blog_dag_builds_offline(tmp_path):
    copy_workflow(tmp_path)
    jobs = planned_jobs(tmp_path, "--configfile", "config/blog.yaml")
    assert jobs == {
        "plan": 1,
        "base_model": 1,
        "prepare_data": 1,
        "prepare_eval_set": 1,
        "train": 3,
        "generate": 4,
        "evaluate": 4,
        "analyse_weights": 3,
        "lm_eval": 4,
        "compare": 1,
        "report": 1,
        "all": 1,
    }
    assert not (tmp_path / "results").exists()


def test_a_bad_config_stops_before_any_job(tmp_path):
    copy_workflow(tmp_path)
    (tmp_path / "config" / "bad.yaml").write_text(
        "lora: {r: 0}\ntraining: {learning_rate: -1}\nruns: {'bad/name': {method: lora}}\n"
    )
    result = snakemake(tmp_path, "--cores", "1", "--configfile", "config/bad.yaml", check=False)
    assert result.returncode != 0
    assert "invalid config (3 problems)" in result.stderr
    assert "`lora.r` = 0: must be >= 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()
