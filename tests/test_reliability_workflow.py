"""Reliability of the whole workflow, run by the real snakemake CLI on a tiny study.

The study has one LoRA run (dropout 0.1) of 24 steps over nearly three epochs of 36 rows, logging
every step and saving every 5. It is run three times:
- `reference`: from scratch, uninterrupted, the whole workflow;
- `repeat`: from scratch again, up to the run's generations (determinism);
- `interrupted`: from the reference's base model and data, training killed and rerun several times
  (another config's checkpoints, SIGKILL, a half-written checkpoint, SIGTERM) until it finishes.
A fake Hugging Face token sits in the environment of every run, and in a login token file.
"""

import csv
import json
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers.workflow import SNAKEFILE, SnakemakeAttempt, offline_env, read_jsonl, snakemake_command, succeeded
from helpers.workflow import snakemake as run_snakemake

from ftcompare.checkpoints import is_complete

pytestmark = pytest.mark.slow

RUN = "lora"
METRICS = f"results/runs/{RUN}/metrics.json"
TRAIN_LOG = f"results/logs/train/{RUN}.log"
CHECKPOINTS = f"results/checkpoints/{RUN}"
MAX_STEPS = 24
SAVE_STEPS = 5
LEARNING_RATE = 5.0e-3
OTHER_LEARNING_RATE = 4.0e-3
# Shaped like real tokens, so a redaction that masks `hf_...` would not hide a leak of it.
FAKE_ENV_TOKEN = "hf_FtcompareFakeEnvironmentToken0123456789"
FAKE_LOGIN_TOKEN = "hf_FtcompareFakeLoginToken9876543210abcd"

STUDY = {
    "seed": 11,
    "device": "cpu",
    "data": {"name": "embedded", "embedded_rows": 40, "eval_fraction": 0.1},
    "base_model": {
        "name": "embedded",
        "embedded": {
            "vocab_size": 400,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 128,
            "pretrain_steps": 2,
            "pretrain_batch_size": 8,
            "pretrain_seq_length": 64,
        },
    },
    "training": {
        "max_steps": MAX_STEPS,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "save_steps": SAVE_STEPS,
        "save_total_limit": 2,
        "max_seq_length": 64,
    },
    "lora": {"lora_dropout": 0.1},
    "runs": {RUN: {"method": "lora", "training": {"learning_rate": LEARNING_RATE}}},
    "generation": {"max_new_tokens": 8, "do_sample": True, "temperature": 1.0},
    "telemetry": {"interval_s": 0.5},
    # Kept, so that the next config's run finds a finished run's checkpoints to refuse.
    "checkpoints": {"keep": True},
}


@pytest.fixture(scope="module")
def make_env(tmp_path_factory):
    """An environment for one workflow: offline, a fake token in HF_TOKEN, and a Hugging Face home of
    its own whose standard login (the `token` file) holds another fake token."""

    def make():
        home = tmp_path_factory.mktemp("hf-home")
        (home / "token").write_text(FAKE_LOGIN_TOKEN)
        return offline_env({"HF_HOME": str(home), "HF_TOKEN": FAKE_ENV_TOKEN, "HUGGING_FACE_HUB_TOKEN": FAKE_ENV_TOKEN})

    return make


def make_workdir(path: Path, config: dict = STUDY) -> Path:
    """A folder to run the workflow in, whose config/config.yaml (the only config) is `config`."""
    (path / "config").mkdir(parents=True)
    (path / "config" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def snakemake(workdir, env, *args) -> subprocess.CompletedProcess:
    """The repository's Snakefile run in `workdir` with `env`; the caller checks the exit."""
    return run_snakemake(workdir, *args, env=env, snakefile=SNAKEFILE, check=False)


def read_log_history(workdir) -> list[dict]:
    with open(Path(workdir) / "results" / "runs" / RUN / "log_history.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def from_scratch(tmp_path_factory, make_env):
    """The study twice from scratch, side by side on one core each: the whole workflow, and again up to
    the run's generations. One core per job also keeps torch from spinning threads on a busy machine."""
    reference = make_workdir(tmp_path_factory.mktemp("reference"))
    repeat = make_workdir(tmp_path_factory.mktemp("repeat"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            pool.submit(snakemake, reference, make_env(), "--cores", "1"),
            pool.submit(snakemake, repeat, make_env(), "--cores", "1", f"results/generations/{RUN}.jsonl"),
        ]
        for workdir, run in zip((reference, repeat), runs):
            result = succeeded(run.result())
            # Kept with the rest, so the token search reads what snakemake printed too.
            (workdir / "snakemake.out").write_text(result.stdout + result.stderr, encoding="utf-8")
    return reference, repeat


@pytest.fixture(scope="module")
def reference(from_scratch):
    return from_scratch[0]


@pytest.fixture(scope="module")
def repeat(from_scratch):
    return from_scratch[1]


def test_checkpoints_are_kept_outside_the_outputs_newest_first(reference):
    """Saved every 5 steps and at the end; save_total_limit 2 keeps the newest two."""
    kept = sorted(p.name for p in (reference / CHECKPOINTS).glob("checkpoint-*"))
    assert kept == ["checkpoint-20", f"checkpoint-{MAX_STEPS}"]
    assert all(is_complete(reference / CHECKPOINTS / name) for name in kept)


# --- interrupting a run ----------------------------------------------------------------------------


class TrainingAttempt(SnakemakeAttempt):
    """One `snakemake` for the run's metrics, on one core."""

    def __init__(self, workdir: Path, env: dict, name: str, *args: str):
        command = snakemake_command(METRICS, "--cores", "1", *args, snakefile=SNAKEFILE)
        super().__init__(workdir, name, command, env, TRAIN_LOG)


@dataclass
class Outcome:
    """What one attempt ended with; only the fields that attempt has are set."""

    code: int
    log: str
    output: str = ""
    step: int | None = None
    metrics_existed: bool | None = None
    planted: Path | None = None


def tensorboard_losses(workdir: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / f"results/runs/{RUN}/tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("train/loss")]


def checkpoint(workdir: Path, step: int) -> Path:
    return workdir / CHECKPOINTS / f"checkpoint-{step}"


def newest_complete_step(workdir: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in (workdir / CHECKPOINTS).glob("checkpoint-*") if is_complete(p)]
    return max(steps)


def made_for_learning_rate(workdir: Path, learning_rate: float) -> bool:
    """The checkpoint folder's fingerprint is that of a run with `learning_rate` (so the folder was reset)."""
    try:
        stored = json.loads((workdir / CHECKPOINTS / "ftcompare_fingerprint.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stored["settings"]["training"]["learning_rate"] == learning_rate


def kill_after_first_checkpoint(attempt: TrainingAttempt, learning_rate: float) -> int:
    attempt.wait_until(
        lambda: (
            made_for_learning_rate(attempt.workdir, learning_rate)
            and is_complete(checkpoint(attempt.workdir, SAVE_STEPS))
        ),
        "the first checkpoint",
    )
    return attempt.signal_group(signal.SIGKILL)


def plant_half_written_checkpoint(workdir: Path, step: int) -> Path:
    """A checkpoint cut off while saving: weights written, trainer_state.json truncated."""
    source = checkpoint(workdir, newest_complete_step(workdir))
    planted = checkpoint(workdir, step)
    shutil.copytree(source, planted)
    state = planted / "trainer_state.json"
    state.write_text(state.read_text(encoding="utf-8")[:40], encoding="utf-8")
    return planted


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, make_env, reference):
    """The reference's base model and data; then training interrupted in every way until it finishes."""
    workdir = tmp_path_factory.mktemp("interrupted")
    env = make_env()
    shutil.copytree(reference, workdir, dirs_exist_ok=True)
    other = {**STUDY, "runs": {RUN: {"method": "lora", "training": {"learning_rate": OTHER_LEARNING_RATE}}}}
    (workdir / "config" / "other.yaml").write_text(yaml.safe_dump(other), encoding="utf-8")
    found = {}

    # 1. Another learning rate, over the reference's finished checkpoints; killed after its first checkpoint.
    attempt = TrainingAttempt(workdir, env, "other-config", "--configfile", "config/other.yaml")
    found["other_config"] = Outcome(
        code=kill_after_first_checkpoint(attempt, OTHER_LEARNING_RATE), log=attempt.train_log()
    )

    # 2. The study's config over those checkpoints; killed (SIGKILL) after its first checkpoint.
    succeeded(snakemake(workdir, env, "--unlock"))
    attempt = TrainingAttempt(workdir, env, "killed", "--rerun-incomplete")
    code = kill_after_first_checkpoint(attempt, LEARNING_RATE)
    killed_at = newest_complete_step(workdir)
    found["killed"] = Outcome(
        code=code, log=attempt.train_log(), step=killed_at, metrics_existed=(workdir / METRICS).exists()
    )

    # 3. Rerun with a half-written checkpoint newer than the last good one; SIGTERM once it has saved again.
    planted = plant_half_written_checkpoint(workdir, killed_at + SAVE_STEPS - 1)
    found["locked"] = snakemake(workdir, env, METRICS, "--cores", "1", "--rerun-incomplete")
    succeeded(snakemake(workdir, env, "--unlock"))
    attempt = TrainingAttempt(workdir, env, "terminated", "--rerun-incomplete")
    attempt.wait_until(lambda: is_complete(checkpoint(workdir, killed_at + SAVE_STEPS)), "the next checkpoint")
    code = attempt.signal_group(signal.SIGTERM)
    found["terminated"] = Outcome(
        code=code,
        log=attempt.train_log(),
        output=attempt.output(),
        step=newest_complete_step(workdir),
        metrics_existed=(workdir / METRICS).exists(),
        planted=planted,
    )

    # 4. Rerun to the end: after SIGTERM, Snakemake has cleaned up, so a plain rerun will do.
    attempt = TrainingAttempt(workdir, env, "resumed")
    found["resumed"] = Outcome(code=attempt.finish(), log=attempt.train_log(), output=attempt.output())
    return workdir, found


def test_checkpoints_of_another_config_are_not_resumed_and_the_log_says_why(interrupted):
    _, found = interrupted
    other, killed = found["other_config"], found["killed"]
    for outcome in (other, killed):
        assert (
            f"not resuming from the checkpoints in {CHECKPOINTS}: they were made with different "
            "settings.training.learning_rate; training starts over from step 0" in outcome.log
        )
        assert "resuming run" not in outcome.log


def test_a_killed_run_leaves_no_output_and_a_rerun_asks_for_unlock_first(interrupted):
    _, found = interrupted
    killed = found["killed"]
    assert killed.code == -signal.SIGKILL
    assert killed.step >= SAVE_STEPS and not killed.metrics_existed
    locked = found["locked"]
    assert locked.returncode != 0
    assert "--unlock" in locked.stdout + locked.stderr


def test_a_rerun_skips_a_half_written_checkpoint_and_resumes_from_the_one_before(interrupted):
    _, found = interrupted
    killed_at, terminated = found["killed"].step, found["terminated"]
    assert f"skipping {CHECKPOINTS}/{terminated.planted.name}: incomplete" in terminated.log
    assert not terminated.planted.exists()
    assert f"resuming run {RUN} from {CHECKPOINTS}/checkpoint-{killed_at} (step {killed_at})" in terminated.log


def test_sigterm_saves_a_checkpoint_and_fails_the_job(interrupted):
    _, found = interrupted
    terminated = found["terminated"]
    assert terminated.code != 0
    message = f"run {RUN}: stopped by SIGTERM at step {terminated.step}; a checkpoint was saved"
    assert message in terminated.log
    assert f"ftcompare: rule train: {message}" in terminated.output
    # A checkpoint of its own, after the regular one the signal waited for.
    assert terminated.step > found["killed"].step + SAVE_STEPS
    assert not terminated.metrics_existed


def test_the_resumed_run_covers_every_step_once_and_ends_like_an_uninterrupted_one(interrupted, reference):
    workdir, found = interrupted
    resumed_outcome, saved_at = found["resumed"], found["terminated"].step
    assert resumed_outcome.code == 0, resumed_outcome.output[-4000:] + resumed_outcome.log[-4000:]
    assert f"resuming run {RUN} from {CHECKPOINTS}/checkpoint-{saved_at} (step {saved_at})" in resumed_outcome.log

    resumed, uninterrupted = read_log_history(workdir), read_log_history(reference)
    assert [int(row["step"]) for row in resumed] == list(range(1, MAX_STEPS + 1))
    # Losses, learning rates and gradient norms, as written: bytes, not approximations.
    for column in ("step", "epoch", "loss", "learning_rate", "grad_norm"):
        assert [row[column] for row in resumed] == [row[column] for row in uninterrupted], column
    elapsed = [float(row["elapsed_s"]) for row in resumed]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    # TensorBoard too: every step once, with the uninterrupted run's values (what the killed jobs logged
    # after their last checkpoint is dropped).
    losses = tensorboard_losses(workdir)
    assert [step for step, _ in losses] == list(range(1, MAX_STEPS + 1))
    assert losses == tensorboard_losses(reference)

    metrics = json.loads((workdir / METRICS).read_text(encoding="utf-8"))
    reference_metrics = json.loads((reference / METRICS).read_text(encoding="utf-8"))
    assert metrics["resumed_from_step"] == saved_at and reference_metrics["resumed_from_step"] is None
    assert metrics["train_steps"] == MAX_STEPS
    assert metrics["final_train_loss"] == reference_metrics["final_train_loss"]
    assert metrics["eval_loss"] == reference_metrics["eval_loss"]
    assert metrics["train_runtime_s"] >= elapsed[saved_at - 1]
    adapter = f"results/runs/{RUN}/model/adapter_model.safetensors"
    assert (workdir / adapter).read_bytes() == (reference / adapter).read_bytes()
    assert (workdir / CHECKPOINTS / "ftcompare_finished.json").is_file()


# --- determinism ----------------------------------------------------------------------------------


def test_same_config_and_seed_give_identical_bytes(reference, repeat):
    for path in [
        "results/data/train.parquet",
        "results/data/eval.parquet",
        "results/models/base/model.safetensors",
        f"results/runs/{RUN}/model/adapter_model.safetensors",
    ]:
        assert (reference / path).read_bytes() == (repeat / path).read_bytes(), path
    first, second = read_log_history(reference), read_log_history(repeat)
    for column in ("step", "epoch", "loss", "learning_rate", "grad_norm"):
        assert [row[column] for row in first] == [row[column] for row in second], column
    generations = f"results/generations/{RUN}.jsonl"
    first, second = read_jsonl(reference / generations), read_jsonl(repeat / generations)
    assert [(g["prompt"], g["output"], g["new_tokens"]) for g in first] == [
        (g["prompt"], g["output"], g["new_tokens"]) for g in second
    ]
    assert len({g["output"] for g in first}) > 1


def test_rows_longer_than_max_seq_length_are_counted_in_the_data_card(reference):
    card = json.loads((reference / "results" / "data" / "data_card.json").read_text(encoding="utf-8"))
    assert card["max_seq_length"] == 64
    assert 0 < card["truncated_rows"]["train"] <= card["rows"]["train"]
    assert card["token_length"]["train"]["max"] > 64
    log = (reference / "results" / "logs" / "prepare_data.log").read_text(encoding="utf-8")
    assert f"{card['truncated_rows']['train']} rows over max_seq_length 64" in log


# --- secrets and remote code ----------------------------------------------------------------------


def test_no_file_the_workflow_made_holds_the_token(reference, repeat, interrupted):
    workdirs = [reference, repeat, interrupted[0]]
    searched = 0
    for workdir in workdirs:
        for path in workdir.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                searched += 1
                for token in (FAKE_ENV_TOKEN, FAKE_LOGIN_TOKEN):
                    assert token.encode() not in data, f"{token} found in {path}"
    assert searched > 100
    assert (reference / "results" / "report" / "report.html").is_file()


def test_remote_code_stays_off_unless_asked_and_the_report_says_so(reference):
    html = (reference / "results" / "report" / "report.html").read_text(encoding="utf-8")
    assert "off: no code from model repositories was run" in html


def test_no_temporary_file_is_left_behind(reference, repeat):
    for workdir in (reference, repeat):
        leftovers = [p for p in (workdir / "results").rglob("*") if p.name.endswith(".tmp")]
        assert leftovers == []
