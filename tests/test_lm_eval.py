"""The lm_eval stage for real on the CPU: lm-evaluation-harness scores a small embedded base model and a
LoRA run trained on it on the offline task python_docs_continuation (tests/fixtures/lm_eval); the JSON
holds each metric with its standard error; the report tables the numbers; bad config and unknown task
names are refused, naming them; and the stage adds jobs to the DAG only when tasks are configured."""

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fakes.telemetry import FakeTelemetry
from helpers.html import assert_shows, parse_html, table_rows
from helpers.report import BLOG_RUNS, blog_config, fixture_paths, scratch_dir
from helpers.strict_json import loads_strict
from helpers.tiny_run import run_paths, settings_for
from helpers.workflow import copy_workflow, planned_jobs

from conftest import REPO
from ftcompare import needed_packages
from ftcompare.atomic import write_json
from ftcompare.config import ConfigError, config_hash, validate_config
from ftcompare.embedded_data import build_embedded_texts
from ftcompare.embedded_model import EmbeddedModelSpec, build_embedded_model
from ftcompare.errors import FtcompareError
from ftcompare.generation import load_generation_model
from ftcompare.lm_eval_stage import LIMIT_WARNING, LmEvalSettings, _resolved_data_files, evaluate_model, run_tasks
from ftcompare.report.build import build_report
from ftcompare.report.inputs import load_report_inputs
from ftcompare.report.lm_eval import lm_eval_table, load_lm_eval_results
from ftcompare.strict_json import read_json_object
from ftcompare.training import train_run

TASK = "python_docs_continuation"
TASKS_DIR = REPO / "tests" / "fixtures" / "lm_eval"
ITEMS = 40
LORA_LIMIT = 30
SMALL = EmbeddedModelSpec(
    vocab_size=384,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=128,
    pretrain_steps=20,
    pretrain_batch_size=8,
    pretrain_seq_length=32,
    pretrain_learning_rate=1e-2,
    seed=7,
)

# scripts/run_lm_eval.py as Snakemake runs it: its own process, a `snakemake` object, a log.
ENTRY_SCRIPT_DRIVER = textwrap.dedent("""
    import json, runpy, sys
    from types import SimpleNamespace
    spec = json.loads(sys.argv[1])

    class Named(dict):
        __getattr__ = dict.__getitem__

    class Wildcards(list):
        model = spec["model"]

    snakemake = SimpleNamespace(rule="lm_eval", log=[spec["log"]], threads=1, wildcards=Wildcards([spec["model"]]),
                                resources=SimpleNamespace(gpu=0), input=Named(spec["input"]),
                                params=SimpleNamespace(**spec["params"]), output=SimpleNamespace(**spec["output"]))
    runpy.run_path(spec["script"], init_globals={"snakemake": snakemake}, run_name="__main__")
""")


def settings(limit=None, tasks=(TASK,)) -> LmEvalSettings:
    return LmEvalSettings(
        tasks=list(tasks),
        limit=limit,
        num_fewshot=None,
        batch_size=8,
        bootstrap_iters=1000,
        include_path=str(TASKS_DIR),
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A small embedded base model and a LoRA run trained on it for a few steps."""
    root = tmp_path_factory.mktemp("lm-eval-models")
    build_embedded_model(SMALL, root / "base", log=lambda message: None)
    texts = build_embedded_texts(24, seed=3)
    for name, rows in (("train", texts[:20]), ("eval", texts[20:])):
        pq.write_table(pa.table({"text": rows}), root / f"{name}.parquet")
    paths = run_paths(root, root / "lora")
    run = settings_for("lora", max_steps=6, learning_rate=2e-2, max_seq_length=96)
    train_run(run, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    return root / "base", paths.model_out


@pytest.fixture(scope="module")
def results(models, tmp_path_factory):
    """results/lm_eval/{base,lora}.json: the base in this process, the LoRA run through the entry script."""
    base, lora = models
    out = tmp_path_factory.mktemp("lm-eval-results")
    model, tokenizer = load_generation_model(base, None, "base", True, "float32", False, "cpu")
    write_json(out / "base.json", evaluate_model(model, tokenizer, settings(), "base", "base"))
    spec = {
        "script": str(REPO / "scripts" / "run_lm_eval.py"),
        "model": "lora",
        "log": str(out / "lora.log"),
        "input": {"base_model": str(base), "run_model": str(lora), "task_files": []},
        "params": {
            "lm_eval": dataclasses.asdict(settings(limit=LORA_LIMIT)),
            "method": "lora",
            "quantization": {},
            "candidates": {},
            "dtype": "float32",
            "device": "cpu",
            "telemetry": {"backend": "cpu", "interval_s": 0.2},
            "trust_remote_code": False,
        },
        "output": {
            "results": str(out / "lora.json"),
            "telemetry": str(out / "lora.telemetry.csv"),
            "telemetry_summary": str(out / "lora.telemetry.json"),
        },
    }
    job = subprocess.run(
        [sys.executable, "-c", ENTRY_SCRIPT_DRIVER, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO / "scripts"), "HF_HUB_OFFLINE": "1"},
    )
    assert job.returncode == 0, job.stderr[-3000:] + Path(spec["log"]).read_text()[-3000:]
    return out


@pytest.mark.slow
def test_each_metric_comes_with_its_standard_error_for_the_base_model_and_the_lora_run(results):
    for model, n in (("base", ITEMS), ("lora", LORA_LIMIT)):
        document = loads_strict((results / f"{model}.json").read_text(encoding="utf-8"))
        assert document["model"] == model and document["method"] == model
        assert document["requested_tasks"] == [TASK]
        assert document["lm_eval_version"] == "0.4.13"
        task = document["tasks"][TASK]
        assert task["n_samples"] == n and task["n_samples_available"] == ITEMS
        assert task["num_fewshot"] == 0
        assert set(task["metrics"]) == {"acc", "acc_norm"}
        for metric in task["metrics"].values():
            # An accuracy is a mean of n 0/1 scores: lm-eval's stderr is sqrt(p (1 - p) / (n - 1)).
            p = metric["value"]
            assert 0 <= p <= 1 and round(p * n) == pytest.approx(p * n)
            assert metric["stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))
    lora = read_json_object(results / "lora.json")
    assert lora["limit"] == LORA_LIMIT and lora["limit_warning"] == LIMIT_WARNING
    assert read_json_object(results / "base.json")["limit"] is None
    log = (results / "lora.log").read_text()
    assert "REAL METRICS SHOULD NOT BE COMPUTED USING LIMIT" in log
    assert read_json_object(results / "lora.telemetry.json")["job"] == "lm_eval lora"


def test_a_best_model_s_row_names_the_sweep_point_it_scored(tmp_path):
    document = {"model": "best-lora", "method": "lora", "requested_tasks": [TASK], "limit": None}
    document |= {"tasks": {TASK: {"metrics": {"acc": {"value": 0.5, "stderr": 0.1}}, "n_samples": 40}}}
    document |= {"best_of": {"run": "lora-lr1e-3-s42", "metric": "eval_loss", "eval_loss": 2.0, "candidates": {}}}
    write_json(tmp_path / "best-lora.json", document)
    table = lm_eval_table(load_lm_eval_results([tmp_path / "best-lora.json"]))
    assert [row[0].value for row in table.rows] == ["best-lora (lora-lr1e-3-s42)"]


@pytest.mark.slow
def test_the_report_tables_each_task_metric_with_its_stderr_and_warns_about_the_limit(results):
    config = blog_config()
    paths = dataclasses.replace(
        fixture_paths("blog_mi250", BLOG_RUNS), lm_eval=[results / "base.json", results / "lora.json"]
    )
    inputs = load_report_inputs(
        paths, BLOG_RUNS, config, config_hash(config), config["report"]["reference"], config["report"]["title"]
    )
    out = scratch_dir() / "report"
    built = build_report(inputs, out / "report.html", out / "figures", out / "tables")
    assert {out / "tables" / "lm_eval.csv", out / "tables" / "lm_eval.tex"} <= set(built.tables)

    dom = parse_html(out / "report.html")
    rows = table_rows(dom, "lm-eval")
    assert list(rows) == ["base", "lora"]
    with open(out / "tables" / "lm_eval.csv", encoding="utf-8") as handle:
        csv_rows = {row["model"]: row for row in csv.DictReader(handle)}
    for model in ("base", "lora"):
        task = read_json_object(results / f"{model}.json")["tasks"][TASK]
        assert rows[model]["method"].text().strip() == model
        assert_shows(rows[model][f"{TASK}_n"], task["n_samples"], model)
        assert int(csv_rows[model][f"{TASK}_n"]) == task["n_samples"]
        for name, metric in task["metrics"].items():
            assert_shows(rows[model][f"{TASK}_{name}"], metric["value"], f"{model} {name}")
            assert_shows(rows[model][f"{TASK}_{name}_stderr"], metric["stderr"], f"{model} {name} stderr")
            assert float(csv_rows[model][f"{TASK}_{name}"]) == pytest.approx(metric["value"], abs=5e-5)
            assert float(csv_rows[model][f"{TASK}_{name}_stderr"]) == pytest.approx(metric["stderr"], abs=5e-5)
    warning = dom.find("p", cls="warning")
    assert f"at most {LORA_LIMIT} rows per task" in warning.text() and "Not real metrics" in warning.text()
    latex = (out / "tables" / "lm_eval.tex").read_text(encoding="utf-8")
    assert "python\\_docs\\_continuation" in latex and "REAL METRICS SHOULD NOT BE COMPUTED USING LIMIT" in latex


@pytest.mark.slow
def test_a_task_lm_eval_does_not_know_is_named_before_the_model_is_scored():
    with pytest.raises(FtcompareError) as error:
        run_tasks(None, None, settings(tasks=[TASK, "hellaswagg"]))
    message = str(error.value)
    assert "'hellaswagg'" in message and "did you mean 'hellaswag'" in message and TASK not in message.split(";")[0]


def test_relative_data_files_are_taken_from_the_task_folder_and_others_are_left_alone(tmp_path):
    resolved = _resolved_data_files({"data_files": {"test": "items.jsonl", "train": ["a.jsonl"]}}, tmp_path)
    assert resolved == {"data_files": {"test": str(tmp_path / "items.jsonl"), "train": [str(tmp_path / "a.jsonl")]}}
    assert _resolved_data_files({"data_files": "/data/items.jsonl"}, tmp_path) is None
    assert _resolved_data_files({"data_files": "hf://datasets/x/y.jsonl"}, tmp_path) is None
    assert _resolved_data_files({"name": "x"}, tmp_path) is None


def test_the_offline_task_ships_the_same_in_the_tests_and_in_config():
    for name in (f"{TASK}.yaml", f"{TASK}.jsonl"):
        assert (REPO / "config" / "lm_eval_tasks" / name).read_bytes() == (TASKS_DIR / name).read_bytes()
    items = [json.loads(line) for line in (TASKS_DIR / f"{TASK}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(items) == ITEMS
    assert all(len(item["choices"]) == 4 and 0 <= item["label"] < 4 for item in items)


@pytest.mark.parametrize(
    "section, problem",
    [
        ({"taskz": ["hellaswag"]}, "unknown key `lm_eval.taskz` (did you mean tasks?)"),
        ({"include_path": "no/such/folder"}, "lm_eval.include_path = 'no/such/folder': no such folder"),
        ({"limit": 0}, "`lm_eval.limit` = 0: must be >= 1"),
        ({"tasks": ["hellaswag", "hellaswag"]}, "lm_eval.tasks"),
    ],
)
def test_bad_lm_eval_config_is_refused_naming_the_key(section, problem):
    with pytest.raises(ConfigError) as error:
        validate_config({"lm_eval": section}, search_dirs=[REPO])
    assert problem in str(error.value)


def test_tasks_without_lm_eval_installed_are_refused_saying_what_to_install(monkeypatch):
    monkeypatch.setattr(needed_packages, "_installed", lambda module: module != "lm_eval")
    with pytest.raises(ConfigError) as error:
        validate_config({"lm_eval": {"tasks": ["hellaswag"]}}, search_dirs=[REPO])
    assert "lm_eval.tasks: the task benchmarks need the lm_eval package (pip install lm-eval)" in str(error.value)
    validate_config({"lm_eval": {"tasks": []}}, search_dirs=[REPO])


def test_the_default_has_no_tasks_and_the_blog_the_forgetting_suite_with_a_limit(default_config, blog_config):
    assert default_config["lm_eval"]["tasks"] == []
    assert blog_config["lm_eval"]["tasks"] == ["hellaswag", "arc_challenge", "winogrande"]
    assert blog_config["lm_eval"]["limit"] == 500


@pytest.mark.slow
def test_the_stage_adds_jobs_only_when_tasks_are_configured(tmp_path):
    copy_workflow(tmp_path)
    assert "lm_eval" not in planned_jobs(tmp_path)
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    raw["lm_eval"] = {"tasks": [TASK], "include_path": "config/lm_eval_tasks"}
    (tmp_path / "config" / "tasks.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    jobs = planned_jobs(tmp_path, "--configfile", "config/tasks.yaml")
    assert jobs["lm_eval"] == 1 + len(raw["runs"])
    assert jobs["report"] == 1
