"""The reports built from the committed fixture results in tests/fixtures/results/ (no training):
the blog's setup on an MI250 (built in this process) and the embedded default on a CPU (built by
scripts/report.py as Snakemake runs it). Each is built once per test session, for every module that
asks (the report tests and the browser test share the blog one)."""

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml

from conftest import REPO
from ftcompare.config import config_hash, validate_config
from ftcompare.report.build import ReportOutputs, build_report
from ftcompare.report.inputs import ReportInputPaths, load_report_inputs

FIXTURES = REPO / "tests" / "fixtures" / "results"
BLOG_RUNS = ["lora", "full"]
CPU_RUNS = ["lora", "lora-r64", "full"]
BLOG_FIGURES = [
    "training_loss_vs_step",
    "training_loss_vs_time",
    "memory_over_time",
    "utilisation_power_over_time",
    "cost_per_run",
]


def fixture_paths(scenario: str, runs: list[str]) -> ReportInputPaths:
    root = FIXTURES / scenario
    return ReportInputPaths(
        metrics=[root / "runs" / run / "metrics.json" for run in runs],
        log_history=[root / "runs" / run / "log_history.csv" for run in runs],
        train_telemetry=[root / "runs" / run / "telemetry.json" for run in runs],
        generations=[root / "generations" / f"{model}.jsonl" for model in ["base", *runs]],
        data_card=root / "data" / "data_card.json",
        base_card=root / "models" / "base" / "ftcompare_model.json",
        plan=root / "plan" / "plan.json",
        template=REPO / "report" / "report.html.j2",
        style=REPO / "report" / "style.css",
    )


def blog_config() -> dict:
    raw = yaml.safe_load((REPO / "config" / "blog.yaml").read_text(encoding="utf-8"))
    return validate_config(raw, search_dirs=[REPO])


def cpu_config() -> dict:
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    raw["runs"] = {
        "lora": raw["runs"]["lora"],
        "lora-r64": {"method": "lora", "lora": {"r": 64, "lora_alpha": 64}, "training": {"learning_rate": 2.0e-3}},
        "full": raw["runs"]["full"],
    }
    return validate_config(raw, search_dirs=[REPO])


def scratch_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ftcompare-report-test-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def built_blog_report() -> ReportOutputs:
    config = blog_config()
    inputs = load_report_inputs(
        fixture_paths("blog_mi250", BLOG_RUNS),
        BLOG_RUNS,
        config,
        config_hash(config),
        config["report"]["reference"],
        config["report"]["title"],
    )
    out = scratch_dir() / "report"
    return build_report(
        inputs,
        out / "report.html",
        out / "figures",
        out / "tables",
        command_line="snakemake --cores all --configfile config/blog.yaml",
    )


ENTRY_SCRIPT_DRIVER = textwrap.dedent("""
    import json, runpy, sys
    from types import SimpleNamespace
    spec = json.loads(sys.argv[1])
    snakemake = SimpleNamespace(rule="report", log=[spec["log"]],
                                input=SimpleNamespace(**spec["input"]),
                                params=SimpleNamespace(**spec["params"]),
                                output=SimpleNamespace(**spec["output"]))
    runpy.run_path(spec["script"], init_globals={"snakemake": snakemake}, run_name="__main__")
""")


def run_entry_script(paths: ReportInputPaths, runs, config, out: Path):
    """scripts/report.py as Snakemake runs it: its own process, a `snakemake` object, a log."""
    smk_input = {
        "metrics": [str(p) for p in paths.metrics],
        "log_history": [str(p) for p in paths.log_history],
        "train_telemetry": [str(p) for p in paths.train_telemetry],
        "generations": [str(p) for p in paths.generations],
        "data_card": str(paths.data_card),
        "base_model": str(Path(paths.base_card).parent),
        "plan": str(paths.plan),
        "template": str(paths.template),
        "style": str(paths.style),
        "weights": [str(p) for p in paths.weights],
    }
    if paths.compare_summary is not None:
        smk_input |= {"compare_summary": str(paths.compare_summary), "compare_figures": str(paths.compare_figures)}
    spec = {
        "script": str(REPO / "scripts" / "report.py"),
        "log": str(out / "report.log"),
        "input": smk_input,
        "params": {
            "runs": runs,
            "config": config,
            "config_hash": config_hash(config),
            "reference": config["report"]["reference"],
            "title": config["report"]["title"],
        },
        "output": {"html": str(out / "report.html"), "figures": str(out / "figures"), "tables": str(out / "tables")},
    }
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-c", ENTRY_SCRIPT_DRIVER, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO / "scripts")},
    )


@functools.cache
def built_cpu_report() -> Path:
    out = scratch_dir() / "report"
    done = run_entry_script(fixture_paths("embedded_cpu", CPU_RUNS), CPU_RUNS, cpu_config(), out)
    assert done.returncode == 0, done.stderr + (out / "report.log").read_text()
    return out
