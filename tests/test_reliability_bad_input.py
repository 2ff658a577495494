"""Bad input, fed to the real snakemake CLI: one short message per problem, a non-zero exit, no output.

A bad config stops the workflow before any job starts; a bad data file stops the prepare_data job,
which leaves none of its outputs behind. The cases run two at a time (each is mostly Python
start-up), once for the module. Unusable models and a missing GPU are refused by the same path
(ftcompare.script_runtime); their messages are tested in test_base_model.py and
test_reliability_training.py.
"""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
FAKE_TOKEN = "hf_FtcompareFakeBadInputToken0123456789ab"
DATA_OUTPUTS = ["results/data/train.parquet", "results/data/eval.parquet", "results/data/data_card.json"]
TINY = {
    "seed": 3,
    "device": "cpu",
    "base_model": {
        "name": "embedded",
        "embedded": {
            "vocab_size": 300,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 64,
            "pretrain_steps": 1,
            "pretrain_batch_size": 2,
            "pretrain_seq_length": 16,
        },
    },
}


# --- configs ---------------------------------------------------------------------------------------

# (id, overrides of config/config.yaml, the lines the message must hold)
BAD_CONFIGS = [
    (
        "unknown top-level key",
        {"learning_rate": 1e-4},
        [
            "unknown key `learning_rate`; allowed here: base_model, checkpoints, compare, data, device, eval_sets, "
            "generation, lm_eval, lora, plan, quantization, report, results_dir, runs, seed, select_runs, sweep, "
            "telemetry, training, trust_remote_code, weight_analysis\n"
        ],
    ),
    (
        "unknown nested key",
        {"training": {"lerning_rate": 1e-4}},
        ["unknown key `training.lerning_rate` (did you mean learning_rate?); allowed here: "],
    ),
    ("a token in the config", {"hf_token": FAKE_TOKEN}, ["unknown key `hf_token`; allowed here:"]),
    (
        "learning rate of the wrong type",
        {"training": {"learning_rate": "fast"}},
        ["`training.learning_rate` = 'fast': must be of type number"],
    ),
    ("learning rate 0", {"training": {"learning_rate": 0}}, ["`training.learning_rate` = 0: must be > 0"]),
    (
        "negative learning rate in a run",
        {"runs": {"lora": {"method": "lora", "training": {"learning_rate": -1e-4}}}},
        ["`runs.lora.training.learning_rate` = -0.0001: must be > 0"],
    ),
    ("LoRA r 0", {"lora": {"r": 0}}, ["`lora.r` = 0: must be >= 1"]),
    (
        "LoRA r not an integer in a run",
        {"runs": {"lora": {"method": "lora", "lora": {"r": 0.5}}}},
        ["`runs.lora.lora.r` = 0.5: must be of type integer"],
    ),
    ("dropout 1", {"lora": {"lora_dropout": 1.0}}, ["`lora.lora_dropout` = 1.0: must be < 1"]),
    ("negative dropout", {"lora": {"lora_dropout": -0.1}}, ["`lora.lora_dropout` = -0.1: must be >= 0"]),
    (
        "batch size 0",
        {"training": {"per_device_train_batch_size": 0}},
        ["`training.per_device_train_batch_size` = 0: must be >= 1"],
    ),
    (
        "unknown method",
        {"runs": {"ia3": {"method": "ia3"}}},
        ["`runs.ia3.method` = 'ia3': allowed values are lora, qlora, full"],
    ),
    (
        "run without a method",
        {"runs": {"small": {"lora": {"r": 4}}}},
        ["`runs.small`: missing key `method` (lora, qlora or full)"],
    ),
    (
        "an optimizer whose package is not installed",
        {"runs": {"lora": {"method": "lora", "training": {"optim": "schedule_free_adamw"}}}},
        ["runs.lora: training.optim = schedule_free_adamw needs the schedulefree package (pip install schedulefree)"],
    ),
    (
        "unknown telemetry backend",
        {"telemetry": {"backend": "rocm-smi"}},
        ["`telemetry.backend` = 'rocm-smi': allowed values are auto, amdsmi, nvml, torch, cpu, none"],
    ),
    (
        "missing prompts file",
        {"generation": {"prompts": "config/no-such-prompts.yaml"}},
        ["generation.prompts = 'config/no-such-prompts.yaml': no such file"],
    ),
    (
        "run name that climbs out of results",
        {"runs": {"../../etc": {"method": "lora"}}},
        ["run name '../../etc' is not allowed: use letters, digits, '_', '.', '-'"],
    ),
    ("run name with a slash", {"runs": {"lora/r8": {"method": "lora"}}}, ["run name 'lora/r8' is not allowed"]),
    ("run named base", {"runs": {"base": {"method": "full"}}}, ["run name 'base' is not allowed", "not 'base'"]),
    ("unknown device", {"device": "tpu"}, ["`device` = 'tpu': allowed values are auto, cpu, cuda"]),
    ("eval fraction over 1", {"data": {"eval_fraction": 1.5}}, ["`data.eval_fraction` = 1.5: must be < 1"]),
    (
        "fp16 and bf16 together",
        {"training": {"fp16": True, "bf16": True}},
        ["runs.lora: training.fp16 and training.bf16 are both true; choose one"],
    ),
    (
        "two problems at once",
        {"lora": {"r": 0}, "seed": -1},
        ["invalid config (2 problems):", "`lora.r` = 0: must be >= 1", "`seed` = -1: must be >= 0"],
    ),
]


# --- data ------------------------------------------------------------------------------------------

# (id, file under input/ that data.name points to, its bytes, what the message must hold)
BAD_DATA = [
    (
        "missing text column",
        "qa.jsonl",
        b'{"prompt": "a", "answer": "b"}\n{"prompt": "c", "answer": "d"}\n',
        "input/qa.jsonl has no column 'text' (data.text_column); its columns: prompt, answer",
    ),
    ("empty file", "empty.jsonl", b"", "input/empty.jsonl has no rows"),
    (
        "a row that is not text",
        "mixed.json",
        b'[{"text": "fine"}, {"text": 42}, {"text": "fine"}]',
        "input/mixed.json: row index 1: column 'text' holds an int (42), not a string",
    ),
    ("JSON that does not parse", "broken.json", b'[{"text": "a"}, {"text": "b"', "input/broken.json: not valid JSON: "),
    (
        "invalid UTF-8",
        "latin1.csv",
        "text\nfine\ncaf\u00e9 au lait\n".encode("latin-1"),
        "input/latin1.csv: not valid UTF-8 (byte 0xe9 at offset 13: invalid continuation byte); save it as UTF-8",
    ),
    (
        "CSV row with more fields than the header",
        "extra.csv",
        b'text,label\n"a",1\n"b",2,3\n',
        "input/extra.csv: not valid CSV: line 3 has 3 fields, the header has 2",
    ),
    (
        "not a Parquet file",
        "fake.parquet",
        b"PAR1 this is not parquet",
        "input/fake.parquet: not a readable Parquet file: ",
    ),
    (
        "no row survives",
        "blank.jsonl",
        b'{"text": "  "}\n{"text": "\\n"}\n{"text": ""}\n',
        "data.name = 'input/blank.jsonl': every one of its 3 rows is empty or whitespace",
    ),
]


# --- running them ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf-home")  # an empty hub cache, and a login holding a fake token
    (home / "token").write_text(FAKE_TOKEN)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "HF_TOKEN": FAKE_TOKEN}


def snakemake(workdir, env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, env):
    """A tiny study's base model: prepare_data counts tokens with its tokenizer."""
    workdir = tmp_path_factory.mktemp("base-model")
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(TINY), encoding="utf-8")
    done = snakemake(workdir, env, "--cores", "2", "results/models/base")
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir / "results" / "models" / "base"


def run_config_case(root: Path, env, case) -> tuple[subprocess.CompletedProcess, Path]:
    id, overrides, _ = case
    workdir = root / id.replace(" ", "-")
    shutil.copytree(REPO / "config", workdir / "config")
    (workdir / "config" / "bad.yaml").write_text(yaml.safe_dump(overrides), encoding="utf-8")
    return snakemake(workdir, env, "--cores", "1", "--configfile", "config/bad.yaml"), workdir


def run_data_case(root: Path, base_model: Path, env, case) -> tuple[subprocess.CompletedProcess, Path]:
    id, file_name, content, _ = case
    workdir = root / id.replace(" ", "-")
    (workdir / "config").mkdir(parents=True)
    config = {**TINY, "data": {"name": f"input/{file_name}"}}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copytree(base_model, workdir / "results" / "models" / "base")
    (workdir / "input").mkdir()
    (workdir / "input" / file_name).write_bytes(content)
    return snakemake(workdir, env, "--cores", "1", DATA_OUTPUTS[-1]), workdir


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, env, base_model):
    root = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=2) as pool:
        configs = {case[0]: pool.submit(run_config_case, root / "config", env, case) for case in BAD_CONFIGS}
        data = {case[0]: pool.submit(run_data_case, root / "data", base_model, env, case) for case in BAD_DATA}
        return {id: future.result() for id, future in {**configs, **data}.items()}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=[case[0] for case in BAD_CONFIGS])
def test_a_bad_config_stops_the_workflow_before_any_job(outcomes, case):
    id, _, expected = case
    result, workdir = outcomes[id]
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert "ftcompare: invalid config (" in result.stderr
    for text in expected:
        assert text in result.stderr
    # One line per problem (a problem of every run's: one per run of the three); an unknown key's line
    # lists the keys allowed beside it.
    assert 1 <= len(problems) <= 3 and all(len(line) < 600 for line in problems)
    assert "See config/config.schema.yaml" in result.stderr
    assert "Traceback" not in result.stderr and FAKE_TOKEN not in result.stderr
    assert "Building DAG of jobs" not in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_a_bad_prompts_file_stops_a_dry_run_before_any_job(tmp_path, env):
    """The prompts file is read with the config: `snakemake -n` refuses it, not the generate job after training."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "config" / "bad-prompts.yaml").write_text("prompts:\n  - fine\n  - [unclosed\n", encoding="utf-8")
    overrides = {"generation": {"prompts": "config/bad-prompts.yaml"}}
    (tmp_path / "config" / "bad.yaml").write_text(yaml.safe_dump(overrides), encoding="utf-8")
    result = snakemake(tmp_path, env, "-n", "--configfile", "config/bad.yaml")
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert problems == [
        "  - generation.prompts = 'config/bad-prompts.yaml': not valid YAML (line 4, column 1: expected ',' or ']', "
        "but got '<stream end>'); expected a `prompts:` list of non-empty strings, like config/prompts.yaml"
    ]
    assert "ftcompare: invalid config (1 problem):" in result.stderr
    assert "Traceback" not in result.stderr and FAKE_TOKEN not in result.stderr
    assert "Building DAG of jobs" not in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("case", BAD_DATA, ids=[case[0] for case in BAD_DATA])
def test_bad_data_fails_its_job_clearly_and_leaves_no_output(outcomes, case):
    id, _, _, expected = case
    result, workdir = outcomes[id]
    output = result.stdout + result.stderr
    assert result.returncode == 1
    failure = [line for line in output.splitlines() if line.startswith("ftcompare: rule prepare_data: ")]
    assert len(failure) == 1 and expected in failure[0], output[-4000:]
    log = (workdir / "results" / "logs" / "prepare_data.log").read_text(encoding="utf-8")
    assert expected in log
    assert "(full log: results/logs/prepare_data.log)" in output
    assert "Traceback" not in output + log and FAKE_TOKEN not in output + log
    for path in DATA_OUTPUTS:
        assert not (workdir / path).exists(), path
