"""A run trained by several processes (ftcompare.launch, ftcompare.train_worker): the command and the
environment of the ranks, SIGTERM forwarded and a rank's failure passed on, ranks that die with the job,
and real DDP runs of the tiny model in two gloo processes on the CPU: the same learning as one process
with the same global batch, one set of outputs, every rank stopping at the step where one got SIGTERM,
and through the real snakemake CLI a SIGKILL of the whole job and a rerun that resumes."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from fakes.telemetry import FakeTelemetry
from helpers.tiny_run import make_tiny_run, run_paths, settings_for
from helpers.workflow import SNAKEFILE, offline_env, snakemake, snakemake_command

from ftcompare.checkpoints import checkpoints_in, is_complete
from ftcompare.errors import FtcompareError
from ftcompare.launch import SCRIPTS_DIR, PhaseFollower, run_workers, train_in_processes, worker_command, worker_env
from ftcompare.training import train_run


def test_the_ranks_are_started_by_torchrun_on_this_node(tmp_path):
    spec = tmp_path / "spec.json"
    assert worker_command(4, spec) == [
        sys.executable,
        "-m",
        "ftcompare.launch",  # torchrun, dying with the job
        "--standalone",
        "--nproc-per-node=4",
        "--shutdown-timeout=300",
        "-m",
        "ftcompare.train_worker",
        str(spec),
    ]
    env = worker_env(2, threads=6, environ={"PYTHONPATH": "/elsewhere", "HOME": "/home/x"})
    assert env == {"PYTHONPATH": f"{SCRIPTS_DIR}{os.pathsep}/elsewhere", "HOME": "/home/x", "OMP_NUM_THREADS": "3"}
    assert worker_env(4, threads=2, environ={})["OMP_NUM_THREADS"] == "1"


def fake_workers(tmp_path: Path, on_sigterm: str, exit_code: int) -> list[str]:
    """A stand-in for torchrun: says it is ready, waits for SIGTERM, then writes `on_sigterm` as rank 0's
    message (if any) and exits with `exit_code`."""
    script = f"""
        import pathlib, signal, sys, time
        errors = pathlib.Path({str(tmp_path / "errors")!r})
        def stop(signum, frame):
            if {on_sigterm!r}:
                errors.mkdir(exist_ok=True)
                (errors / "rank0.txt").write_text({on_sigterm!r})
            sys.exit({exit_code})
        signal.signal(signal.SIGTERM, stop)
        pathlib.Path({str(tmp_path / "ready")!r}).touch()
        while True:
            time.sleep(0.05)
    """
    return [sys.executable, "-c", textwrap.dedent(script)]


def sigterm_self_when(path: Path) -> threading.Thread:
    """SIGTERM to this process (as SLURM sends it to the job) once `path` exists."""

    def wait_and_signal():
        while not path.exists():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=wait_and_signal, daemon=True)
    thread.start()
    return thread


def test_sigterm_to_the_job_reaches_the_ranks_and_the_job_fails_with_rank_0_s_message(tmp_path):
    message = "run r: stopped by SIGTERM at step 7; a checkpoint was saved in ck. Rerun to resume."
    before = signal.getsignal(signal.SIGTERM)
    sigterm_self_when(tmp_path / "ready")
    waits = []
    with pytest.raises(FtcompareError) as caught:
        run_workers(
            "r", fake_workers(tmp_path, message, 1), dict(os.environ), tmp_path / "errors", lambda: waits.append(1)
        )
    assert str(caught.value) == message
    assert waits  # the job's sampler was kept up to date while it waited
    assert signal.getsignal(signal.SIGTERM) is before


def test_ranks_that_fail_without_a_word_are_reported_with_torchrun_s_exit_code(tmp_path):
    with pytest.raises(FtcompareError) as caught:
        run_workers("r", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), tmp_path / "errors")
    assert str(caught.value) == (
        "run r: the training processes failed (torchrun exit code 3) before any reported why; see the log above "
        "this line"
    )


def test_the_job_s_sampler_follows_the_phases_rank_0_reports_whole_lines_only(tmp_path):
    telemetry, path = FakeTelemetry(), tmp_path / "phases"
    follow = PhaseFollower(path, telemetry)
    follow()  # nothing reported yet
    path.write_text("load\ntrain\nreset_peaks\nev")
    follow()
    assert telemetry.phases == ["load", "train"] and telemetry.peak_resets == 1
    with open(path, "a") as handle:
        handle.write("al\nsave\n")
    follow()
    assert telemetry.phases == ["load", "train", "eval", "save"] and telemetry.peak_resets == 1


def test_a_rank_dies_with_the_process_that_started_it(tmp_path):
    """torchrun starts each rank in a session of its own, out of reach of a kill of the job's group: the
    kernel kills them when their parent dies (ftcompare.launch.die_with_parent)."""
    ready = tmp_path / "rank.pid"
    rank_code = (
        "import os, time; from ftcompare.launch import die_with_parent; die_with_parent(); "
        f"open({str(ready)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    parent_code = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {rank_code!r}], start_new_session=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env={**os.environ, "PYTHONPATH": str(SCRIPTS_DIR)})
    try:
        deadline = time.monotonic() + 120
        while not (ready.exists() and ready.read_text()):
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.02)
        rank = psutil.Process(int(ready.read_text()))
        assert rank.is_running()
        parent.kill()
        parent.wait()
        rank.wait(timeout=10)  # raises psutil.TimeoutExpired if it outlived its parent
    finally:
        parent.kill()


# --- real runs of two gloo processes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("tiny-run"))


@pytest.mark.slow
def test_two_gloo_processes_learn_what_one_process_learns_with_the_same_global_batch(tiny_run, tmp_path):
    """2 processes x 2 rows against 1 process x 4 rows, full fine-tune (no dropout), group_by_length.

    What can match, and does: each step trains on the same 4 rows (the seeded sampler's order is the same:
    its megabatches of 50 x the per-process batch hold all 20 rows either way, and accelerate hands rank r
    the r-th 2 of each 4), the loss is the token mean over both ranks (transformers gathers the token
    count), and DDP averages the gradients; only the float summation order differs. So every logged loss
    and gradient norm, the eval losses and the weights agree to 1e-6 relative (bit for bit here).
    """
    common = {"learning_rate": 1e-2, "max_steps": 4, "save_steps": 2, "report_to": ["tensorboard"]}
    single = settings_for("full", per_device_train_batch_size=4, **common)
    one, one_rows = train_run(
        single, run_paths(tiny_run, tmp_path / "one"), "cpu", "float32", False, {"f": 1}, FakeTelemetry()
    )
    two_paths, telemetry = run_paths(tiny_run, tmp_path / "two"), FakeTelemetry()
    ddp = settings_for("full", per_device_train_batch_size=2, strategy="ddp", devices=2, **common)
    two, two_rows = train_in_processes(ddp, two_paths, "cpu", "float32", False, {"f": 1}, telemetry, threads=2)

    assert (one.processes, one.global_batch_size, one.strategy) == (1, 4, "single")
    assert (two.processes, two.global_batch_size, two.strategy, two.device_count) == (2, 4, "ddp", 2)
    assert [row["step"] for row in two_rows] == [1, 2, 3, 4]
    for column in ("loss", "grad_norm"):
        assert [row[column] for row in two_rows] == pytest.approx([row[column] for row in one_rows], rel=1e-6)
    assert two.eval_loss_before_training == pytest.approx(one.eval_loss_before_training, rel=1e-6)
    assert two.eval_loss == pytest.approx(one.eval_loss, rel=1e-6) and two.eval_loss < two.eval_loss_before_training
    # The same rows trained: the tokens and FLOPs counted on each rank add up to the single process's.
    assert (two.tokens_seen, two.train_flops) == (one.tokens_seen, one.train_flops) and one.tokens_seen > 0
    from safetensors.torch import load_file

    weights = [load_file(tmp_path / name / "model" / "model.safetensors") for name in ("one", "two")]
    assert all(weights[1][k] == pytest.approx(weights[0][k], rel=1e-6, abs=1e-6) for k in weights[0])

    # One set of outputs, written by rank 0: the model, a TensorBoard log of its own, the eval loss kept
    # for resumes; the checkpoints hold one RNG state per rank.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoints", "model", "tensorboard"]
    assert len(list(two_paths.tensorboard.glob("events.out.tfevents.*"))) == len(
        list((tmp_path / "one" / "tensorboard").glob("events.out.tfevents.*"))
    )
    assert (two_paths.checkpoints / "eval_before_training.json").is_file()
    assert {p.name for p in (two_paths.checkpoints / "checkpoint-4").glob("rng_state*")} == {
        "rng_state_0.pth",
        "rng_state_1.pth",
    }
    # The job's sampler followed rank 0's phases, and reset its peaks once, as training began.
    assert telemetry.phases[-3:] == ["train", "eval", "save"] and telemetry.peak_resets == 1


def ranks_of(process: psutil.Process) -> dict[int, psutil.Process]:
    """{rank: process} of the train_worker processes below `process`."""
    ranks = {}
    for child in process.children(recursive=True):
        try:
            if "ftcompare.train_worker" in child.cmdline():
                ranks[int(child.environ()["RANK"])] = child
        except (psutil.Error, KeyError):
            continue
    return ranks


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(tiny_run, tmp_path):
    """Rank 1 alone gets SIGTERM after the first checkpoint: the ranks agree at the step's end, all save and
    stop there (a rank that went on alone would wait forever in its next collective), and the job fails with
    rank 0's message."""
    paths = run_paths(tiny_run, tmp_path)
    settings = settings_for("full", max_steps=400, save_steps=5, strategy="ddp", devices=2)
    signalled = []

    def signal_rank_1():
        # Any complete checkpoint will do: on a loaded machine this thread may wake only after
        # save_total_limit has already rotated the first one away.
        while True:
            done = paths.checkpoints.is_dir() and any(map(is_complete, checkpoints_in(paths.checkpoints)))
            rank_1 = ranks_of(psutil.Process()).get(1) if done else None
            if rank_1 is not None:
                rank_1.send_signal(signal.SIGTERM)
                signalled.append(rank_1.pid)
                return
            time.sleep(0.01)

    threading.Thread(target=signal_rank_1, daemon=True).start()
    with pytest.raises(FtcompareError) as caught:
        train_in_processes(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry(), threads=2)
    assert signalled, "rank 1 was never signalled"
    newest = checkpoints_in(paths.checkpoints)[0]
    step = int(newest.name.split("-")[1])
    assert str(caught.value) == (
        f"run full: stopped by SIGTERM at step {step}; a checkpoint was saved in {paths.checkpoints}. Rerun to resume."
    )
    assert 5 < step < 400 and is_complete(newest)
    assert {p.name for p in newest.glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert json.loads((newest / "trainer_state.json").read_text())["global_step"] == step
    assert not paths.model_out.exists()


# --- the real snakemake CLI -------------------------------------------------------------------------

RUN = "full-ddp"
MAX_STEPS, SAVE_STEPS = 24, 5
STUDY = {
    "seed": 3,
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
    "training": {"max_steps": MAX_STEPS, "logging_steps": 1, "save_steps": SAVE_STEPS, "max_seq_length": 64},
    "runs": {
        RUN: {
            "method": "full",
            "training": {"learning_rate": 1e-3, "strategy": "ddp", "devices": 2, "per_device_train_batch_size": 2},
        }
    },
    "telemetry": {"interval_s": 0.2},
}


@pytest.mark.slow
def test_a_ddp_run_killed_with_its_job_leaves_no_rank_behind_and_a_rerun_resumes(tmp_path):
    """snakemake trains a run of 2 gloo processes; SIGKILL to snakemake's whole process group (as a
    preemption does) after the first checkpoint; no rank survives it; a rerun resumes from that checkpoint
    and writes what an uninterrupted run writes, the global batch and strategy in metrics.json."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(STUDY), encoding="utf-8")
    metrics_path = tmp_path / "results" / "runs" / RUN / "metrics.json"
    checkpoints = tmp_path / "results" / "checkpoints" / RUN
    with open(tmp_path / "killed.out", "w") as output:
        job = subprocess.Popen(
            snakemake_command(str(metrics_path.relative_to(tmp_path)), "--cores", "2", snakefile=SNAKEFILE),
            cwd=tmp_path,
            env=offline_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 600
        while not is_complete(checkpoints / f"checkpoint-{SAVE_STEPS}"):
            assert job.poll() is None, (tmp_path / "killed.out").read_text()[-4000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ranks = ranks_of(psutil.Process(job.pid))
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert sorted(ranks) == [0, 1]
    gone, alive = psutil.wait_procs(list(ranks.values()), timeout=10)
    assert not alive, f"ranks outlived the killed job: {alive}"
    killed_at = max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*") if is_complete(p))
    assert not metrics_path.exists()

    snakemake(tmp_path, "--unlock", snakefile=SNAKEFILE)
    snakemake(
        tmp_path, str(metrics_path.relative_to(tmp_path)), "--cores", "2", "--rerun-incomplete", snakefile=SNAKEFILE
    )
    log = (tmp_path / "results" / "logs" / "train" / f"{RUN}.log").read_text()
    resumed = f"resuming run {RUN} from results/checkpoints/{RUN}/checkpoint-{killed_at} (step {killed_at})"
    assert resumed in log and "[rank 0]" in log
    metrics = json.loads(metrics_path.read_text())
    assert metrics["resumed_from_step"] == killed_at and metrics["train_steps"] == MAX_STEPS
    assert (metrics["strategy"], metrics["device_count"], metrics["processes"], metrics["global_batch_size"]) == (
        "ddp",
        2,
        2,
        4,
    )
    rows = (tmp_path / "results" / "runs" / RUN / "log_history.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(1, MAX_STEPS + 1))
    assert (tmp_path / "results" / "runs" / RUN / "model" / "model.safetensors").is_file()
    # The job's telemetry followed the phases rank 0 went through.
    with open(tmp_path / "results" / "runs" / RUN / "telemetry.csv", newline="") as handle:
        assert {"load", "train", "save"} <= {row["phase"] for row in csv.DictReader(handle)}
