"""The evaluate rule's entry script (scripts/evaluate.py) on a tiny model, as Snakemake runs it: the base
model and a LoRA run scored on the held-out split and a source set, with the losses training itself
measured on the held-out split (the same code path), and learning and forgetting from the two results."""

import json
import math
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes.telemetry import FakeTelemetry
from helpers.tiny_run import make_tiny_run, run_paths, settings_for

from conftest import REPO
from ftcompare.eval_sets import eval_settings
from ftcompare.learning import learning_forgetting
from ftcompare.strict_json import loads as loads_strict
from ftcompare.training import train_run

RUN_ENTRY_SCRIPT = """
import json, runpy, sys, types

class Namedlist(list):  # Snakemake's: a list whose items also have names
    def __init__(self, **named):
        super().__init__(named.values())
        self.__dict__.update(named)

    def get(self, key, default=None):
        return self.__dict__.get(key, default)

args = json.loads(sys.argv[1])
smk = types.SimpleNamespace(
    rule="evaluate",
    wildcards=Namedlist(model=args["model"]),
    input=Namedlist(**args["input"]),
    output=Namedlist(**args["output"]),
    params=types.SimpleNamespace(**args["params"]),
    resources=types.SimpleNamespace(gpu=0),
    threads=1,
    log=[args["log"]],
)
runpy.run_path(args["script"], init_globals={"snakemake": smk}, run_name="__main__")
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny base model, a LoRA run trained on it, a source set, and both models' evaluate results."""
    root = make_tiny_run(tmp_path_factory.mktemp("tiny-run"))
    settings = settings_for("lora", save_steps=2)  # checkpoints at steps 2 and 4, kept (train_run removes none)
    metrics, _ = train_run(settings, run_paths(root, root / "lora"), "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    source_texts = [" ".join(f"w{(i * 3 + j) % 40}" for j in range(4 + i % 5)) for i in range(7)]
    pq.write_table(pa.table({"text": source_texts}), root / "source.parquet")
    results = {}
    for model in ("base", "lora"):
        done, out = run_evaluate(root, model, settings)
        assert done.returncode == 0, done.stderr + (out / "evaluate.log").read_text()
        results[model] = json.loads((out / "result.json").read_text())
    return root, settings, metrics, results


def run_evaluate(root, model, settings):
    out = root / "evaluate" / model
    out.mkdir(parents=True)
    inputs = {"base_model": str(root / "base"), "eval_sets": [str(root / "eval.parquet"), str(root / "source.parquet")]}
    if model != "base":
        inputs["run_model"] = str(root / model / "model")
    args = {
        "script": str(REPO / "scripts" / "evaluate.py"),
        "model": model,
        "log": str(out / "evaluate.log"),
        "input": inputs,
        "output": {
            "json": str(out / "result.json"),
            "telemetry": str(out / "telemetry.csv"),
            "telemetry_summary": str(out / "telemetry.json"),
        },
        "params": {
            "eval_sets": [["heldout", "target"], ["general", "source"]],
            "settings": eval_settings(settings["training"]),
            "method": "base" if model == "base" else settings["method"],
            "quantization": {},
            "dtype": "float32",
            "seed": settings["seed"],
            "device": "cpu",
            "telemetry": {"backend": "cpu", "interval_s": 0.1},
            "trust_remote_code": False,
            "checkpoints": "" if model == "base" else str(root / model / "checkpoints"),
        },
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN_ENTRY_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO / "scripts"), "HF_HUB_OFFLINE": "1"},
    )
    return done, out


def test_the_held_out_losses_are_the_ones_training_measured(study):
    _, _, metrics, results = study
    assert results["base"]["sets"]["heldout"]["loss"] == pytest.approx(metrics.eval_loss_before_training, rel=1e-5)
    # The adapter merged into the base: the same function up to float rounding.
    assert results["lora"]["sets"]["heldout"]["loss"] == pytest.approx(metrics.eval_loss, rel=1e-4)
    assert metrics.eval_loss < metrics.eval_loss_before_training  # so the comparison above is not vacuous


def test_every_set_has_its_role_loss_perplexity_rows_and_tokens(study):
    root, _, _, results = study
    rows = {"heldout": pq.read_table(root / "eval.parquet").num_rows, "general": 7}
    for model, result in results.items():
        assert result["model"] == model and result["method"] == ("base" if model == "base" else "lora")
        assert list(result["sets"]) == ["heldout", "general"]
        assert result["sets"]["heldout"]["role"] == "target" and result["sets"]["general"]["role"] == "source"
        for name, entry in result["sets"].items():
            assert entry["rows"] == rows[name], (model, name)
            assert entry["tokens"] >= entry["rows"]
            assert entry["perplexity"] == pytest.approx(math.exp(entry["loss"]))
        assert result["settings"]["max_seq_length"] == 16


def test_the_results_are_strict_json_and_the_job_leaves_telemetry_and_a_log(study):
    root, _, _, _ = study
    for model in ("base", "lora"):
        out = root / "evaluate" / model
        loads_strict((out / "result.json").read_text())
        assert json.loads((out / "telemetry.json").read_text())["sample_count"] >= 1
        assert "eval" in (out / "telemetry.csv").read_text()
        assert f"{model}: scored on 2 evaluation sets" in (out / "evaluate.log").read_text()


def test_learning_and_forgetting_of_the_lora_run(study):
    _, _, _, results = study
    result = learning_forgetting(results["base"], results["lora"])
    base, lora = results["base"]["sets"], results["lora"]["sets"]
    assert result.learning == {"heldout": pytest.approx(base["heldout"]["loss"] - lora["heldout"]["loss"])}
    assert result.forgetting == {"general": pytest.approx(lora["general"]["loss"] - base["general"]["loss"])}
    assert result.mean_learning > 0


def test_a_run_s_kept_checkpoints_are_scored_oldest_first_and_the_last_is_the_final_model(study):
    _, _, _, results = study
    assert results["base"]["checkpoints"] == []
    checkpoints = results["lora"]["checkpoints"]
    assert [entry["step"] for entry in checkpoints] == [2, 4]
    final = results["lora"]["sets"]
    assert checkpoints[-1]["sets"]["heldout"]["loss"] == pytest.approx(final["heldout"]["loss"], rel=1e-6)
    assert checkpoints[0]["sets"]["heldout"]["loss"] != pytest.approx(final["heldout"]["loss"], rel=1e-6)
    assert {name: entry["role"] for name, entry in checkpoints[0]["sets"].items()} == {
        "heldout": "target",
        "general": "source",
    }
    path = learning_forgetting(results["base"], results["lora"]).checkpoints
    assert [step for step, _ in path] == [2, 4]


def test_the_entry_script_takes_its_gpus_before_any_other_import():
    lines = [line for line in (REPO / "scripts" / "evaluate.py").read_text().splitlines() if line.strip()]
    code = [line for line in lines if not line.startswith(("#", '"""'))]
    assert code[:2] == [
        "from ftcompare.script_runtime import run_script, take_job_devices",
        "JOB_DEVICES = take_job_devices(snakemake)  # noqa: F821",
    ]
