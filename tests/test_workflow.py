"""The workflow end to end: a tiny study in a temporary folder, run by the real snakemake CLI."""

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

E2E_CONFIG = REPO / "tests" / "data" / "e2e_config.yaml"
WORKFLOW_PARTS = ["Snakefile", "rules", "scripts", "report", "config", "envs", "profiles"]


def copy_workflow(target):
    """A clone-like copy of the workflow, so tests can edit its files without touching the repo."""
    for part in WORKFLOW_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target / part)
    return target


def snakemake(workdir, *args, env=None, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def planned_jobs(workdir, *args):
    """{rule: count} of what a dry run would execute."""
    out = snakemake(workdir, "-n", "--cores", "2", "--quiet", "rules", *args).stdout
    jobs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny study, run once for the whole module."""
    workdir = copy_workflow(tmp_path_factory.mktemp("study"))
    shutil.copy(E2E_CONFIG, workdir / "config" / "e2e.yaml")
    result = snakemake(workdir, "--cores", "2", "--configfile", "config/e2e.yaml")
    return workdir, result


def test_every_output_exists_and_holds_sane_values(study):
    workdir, _ = study
    results = workdir / "results"
    card = json.loads((results / "data" / "data_card.json").read_text())
    assert card["source"] == "embedded"
    assert card["rows"]["train"] + card["rows"]["eval"] == 80
    assert (results / "models" / "base" / "config.json").is_file()

    for run, method in [("lora", "lora"), ("full", "full")]:
        run_dir = results / "runs" / run
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["run"] == run and metrics["method"] == method
        assert metrics["train_steps"] == 6
        assert 0 < metrics["trainable_params"] <= metrics["total_params"]
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
            assert isinstance(metrics[key], float) and metrics[key] > 0, key
        assert metrics["peak_memory_source"].startswith("process RSS")
        rows = list(csv.DictReader((run_dir / "log_history.csv").open()))
        assert [int(r["step"]) for r in rows] == [1, 2, 4, 6]
        assert all(float(r["loss"]) > 0 and float(r["elapsed_s"]) >= 0 for r in rows)
        assert float(rows[-1]["loss"]) == pytest.approx(metrics["final_train_loss"])
        assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
        telemetry = list(csv.DictReader((run_dir / "telemetry.csv").open()))
        assert telemetry and {"train", "load"} <= {r["phase"] for r in telemetry}
        assert all(float(r["rss_mb"]) > 0 for r in telemetry)
        assert json.loads((run_dir / "telemetry.json").read_text())["sample_count"] >= 1
        weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
        assert (run_dir / "model" / weights).is_file()

    lora = json.loads((results / "runs" / "lora" / "metrics.json").read_text())
    full = json.loads((results / "runs" / "full" / "metrics.json").read_text())
    assert lora["trainable_params"] < full["trainable_params"] == full["total_params"]
    assert lora["eval_loss_before_training"] == pytest.approx(full["eval_loss_before_training"])

    prompts = yaml.safe_load((REPO / "config" / "prompts.yaml").read_text())["prompts"]
    for model in ["base", "lora", "full"]:
        records = [json.loads(line) for line in (results / "generations" / f"{model}.jsonl").open()]
        assert [r["prompt"] for r in records] == prompts
        assert all(r["model"] == model and 1 <= r["new_tokens"] <= 8 and r["seconds"] > 0 for r in records)
        assert records[0]["formatted_prompt"].startswith("<s>[INST] What do you think")

    html = (results / "report" / "report.html").read_text()
    assert "lora" in html and "full" in html
    for log in ["base_model.log", "prepare_data.log", "train/lora.log", "generate/base.log", "report.log"]:
        assert (results / "logs" / log).is_file()
    assert (results / "benchmarks" / "train" / "full.tsv").is_file()


def test_a_second_run_does_nothing(study):
    workdir, _ = study
    result = snakemake(workdir, "--cores", "2", "--configfile", "config/e2e.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_reordered_config_file_reruns_nothing(study):
    workdir, _ = study
    config = yaml.safe_load((workdir / "config" / "e2e.yaml").read_text())
    reordered = dict(reversed(list(config.items())))
    (workdir / "config" / "reordered.yaml").write_text(yaml.safe_dump(reordered, sort_keys=False))
    assert planned_jobs(workdir, "--configfile", "config/reordered.yaml") == {}


def test_a_changed_lora_option_reruns_only_that_run_its_generation_and_the_report(study):
    workdir, _ = study
    config = yaml.safe_load((workdir / "config" / "e2e.yaml").read_text())
    config["runs"]["lora"]["lora"] = {"r": 4}
    (workdir / "config" / "changed.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_jobs(workdir, "--configfile", "config/changed.yaml")
    assert jobs == {"train": 1, "generate": 1, "report": 1, "all": 1}
    plan = snakemake(workdir, "-n", "--cores", "2", "--configfile", "config/changed.yaml").stdout
    assert "wildcards: run=lora" in plan and "wildcards: run=full" not in plan


@pytest.mark.parametrize(
    "changed", ["report/report.html.j2", "report/caption_figures.rst", "scripts/ftcompare/report/figures.py"]
)
def test_a_changed_template_or_report_code_reruns_only_the_report(study, changed):
    workdir, _ = study
    path = workdir / changed
    original = path.read_text()
    try:
        path.write_text(original + ("\n{# edited #}\n" if changed.endswith(".j2") else "\n"))
        assert planned_jobs(workdir, "--configfile", "config/e2e.yaml") == {"report": 1, "all": 1}
    finally:
        path.write_text(original)


def test_snakemake_report_builds(study):
    workdir, _ = study
    snakemake(workdir, "--configfile", "config/e2e.yaml", "--report", "results/snakemake-report.zip")
    with zipfile.ZipFile(workdir / "results" / "snakemake-report.zip") as archive:
        names = archive.namelist()
    assert any(name.endswith("report.html") for name in names)
    assert any("metrics.json" in name for name in names)


def test_lint_is_clean():
    result = snakemake(REPO, "--lint")
    assert "Lints for" not in result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


def test_blog_dag_builds_offline(tmp_path):
    copy_workflow(tmp_path)
    jobs = planned_jobs(tmp_path, "--configfile", "config/blog.yaml")
    assert jobs == {"base_model": 1, "prepare_data": 1, "train": 2, "generate": 3, "report": 1, "all": 1}
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
