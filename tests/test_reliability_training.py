"""Reliability in the pieces: the seeded data order, elapsed time across a resume, which checkpoint a
rerun may use, SIGTERM and out-of-memory in a real (tiny) training run, the device rules, the seed
in sampling, and trust_remote_code in every model load and in the report."""

import ast
import json
import logging
import os
import shutil
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tiny_llama import tiny_llama, word_tokenizer
from transformers import LlamaForCausalLM, TrainerState

from conftest import REPO
from ftcompare import devices
from ftcompare.checkpoints import (
    FINISHED_FILE,
    changed_keys,
    checkpoint_step,
    is_complete,
    mark_finished,
    prepare_checkpoint_dir,
)
from ftcompare.config import run_settings, validate_config
from ftcompare.data_order import EpochSeededLengthGroupedSampler, SeededSFTTrainer
from ftcompare.errors import FtcompareError
from ftcompare.fast_path import resolve_torch_compile
from ftcompare.generation import generate_outputs
from ftcompare.training import ProgressRecorder, RunPaths, TokenCountingCollator, train_run

# --- the data order --------------------------------------------------------------------------------


def test_the_length_grouped_order_depends_only_on_seed_and_epoch():
    lengths = [(7 * i) % 23 + 1 for i in range(64)]

    def order(seed, epoch):
        sampler = EpochSeededLengthGroupedSampler(4, lengths, seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    torch.manual_seed(0)
    first = order(1, 0)
    torch.manual_seed(123)  # the global random state plays no part
    assert order(1, 0) == first
    assert sorted(first) == list(range(64))
    assert order(1, 1) != first and order(2, 0) != first
    # Still grouped by length: the longest row opens the epoch, as transformers' sampler does.
    assert lengths[first[0]] == max(lengths)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny Llama and word-level tokenizer saved like a base model, and train/eval Parquet files."""
    root = tmp_path_factory.mktemp("tiny-run")
    tokenizer = word_tokenizer()
    model = tiny_llama(hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    texts = [" ".join(f"w{(i * 7 + j) % 40}" for j in range(3 + i % 9)) for i in range(24)]
    for name, rows in (("train", texts[:20]), ("eval", texts[20:])):
        pq.write_table(pa.table({"text": rows}), root / f"{name}.parquet")
    return root


def settings_for(method="lora", **training):
    config = validate_config(
        {
            "seed": 5,
            "training": {
                "max_steps": 4,
                "per_device_train_batch_size": 2,
                "logging_steps": 1,
                "save_steps": 10,
                "max_seq_length": 16,
                "report_to": [],
                **training,
            },
        },
        search_dirs=[REPO],
    )
    return run_settings(config, method)


def run_paths(root: Path, out: Path) -> RunPaths:
    return RunPaths(
        train_data=root / "train.parquet",
        eval_data=root / "eval.parquet",
        base_model=root / "base",
        model_out=out / "model",
        tensorboard=out / "tensorboard",
        checkpoints=out / "checkpoints",
    )


class FakeTelemetry:
    def set_phase(self, phase):
        pass


@pytest.mark.slow
def test_the_trainer_shuffles_with_the_seeded_sampler_each_epoch(tiny_run, tmp_path):
    import datasets
    from transformers import AutoTokenizer

    from ftcompare.training import build_sft_config

    settings = settings_for()
    args = build_sft_config(settings["training"], settings["seed"], tmp_path, "cpu")
    trainer = SeededSFTTrainer(
        model=LlamaForCausalLM.from_pretrained(tiny_run / "base"),
        args=args,
        train_dataset=datasets.Dataset.from_parquet(str(tiny_run / "train.parquet")),
        processing_class=AutoTokenizer.from_pretrained(tiny_run / "base"),
    )
    loader = trainer.get_train_dataloader()
    sampler = loader.batch_sampler.sampler
    assert isinstance(sampler, EpochSeededLengthGroupedSampler) and sampler.seed == settings["seed"]
    loader.set_epoch(3)
    assert sampler.epoch == 3


# --- elapsed time across a resume ------------------------------------------------------------------


def test_elapsed_time_continues_from_the_checkpoint():
    recorder = ProgressRecorder(TokenCountingCollator(lambda features: features))
    fresh = TrainerState(stateful_callbacks=[recorder])
    assert fresh.stateful_callbacks["ProgressRecorder"] == {"args": {}, "attributes": {"elapsed_s": 0.0}}

    resumed = TrainerState(
        stateful_callbacks={"ProgressRecorder": {"args": {}, "attributes": {"elapsed_s": 81.5}}},
        log_history=[{"step": 5, "loss": 2.0, "elapsed_s": 70.0}],
    )
    recorder.on_train_begin(None, resumed, None)
    try:
        assert recorder.elapsed_offset == 81.5
        assert recorder.state()["attributes"]["elapsed_s"] >= 81.5
    finally:
        recorder.restore_sigterm_handler()

    older = TrainerState(log_history=[{"step": 5, "loss": 2.0, "elapsed_s": 70.0}, {"eval_loss": 1.0}])
    recorder = ProgressRecorder(TokenCountingCollator(lambda features: features))
    recorder.on_train_begin(None, older, None)
    recorder.restore_sigterm_handler()
    assert recorder.elapsed_offset == 70.0
    assert "ProgressRecorder" in older.stateful_callbacks  # so the Trainer can save its state there


# --- which checkpoint a rerun uses -----------------------------------------------------------------


def make_checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}) if complete else '{"glob')
    return path


def test_a_finished_run_trains_again_from_step_zero(tmp_path, caplog):
    folder = tmp_path / "ckpt"
    prepare_checkpoint_dir(folder, {"a": 1})
    make_checkpoint(folder, 10)
    mark_finished(folder)
    with caplog.at_level(logging.WARNING):
        assert prepare_checkpoint_dir(folder, {"a": 1}) is None
    assert "they belong to a run that finished, and this job trains it again; training starts over" in caplog.text
    assert not (folder / "checkpoint-10").exists() and not (folder / FINISHED_FILE).exists()


def test_the_log_names_what_changed_and_what_cannot_be_known(tmp_path, caplog):
    folder = tmp_path / "ckpt"
    before = {"settings": {"training": {"learning_rate": 1e-4, "max_steps": 10}, "lora": {"r": 8}}, "data": "x"}
    prepare_checkpoint_dir(folder, before)
    make_checkpoint(folder, 5)
    after = {"settings": {"training": {"learning_rate": 2e-4, "max_steps": 10}, "lora": {"r": 8}}, "data": "y"}
    with caplog.at_level(logging.WARNING):
        assert prepare_checkpoint_dir(folder, after) is None
    assert (
        f"not resuming from the checkpoints in {folder}: they were made with different data, "
        "settings.training.learning_rate; training starts over from step 0" in caplog.text
    )

    make_checkpoint(folder, 5)
    (folder / "ftcompare_fingerprint.json").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert prepare_checkpoint_dir(folder, after) is None
    assert "they have no readable ftcompare_fingerprint.json" in caplog.text


def test_changed_keys_are_dotted_paths():
    assert changed_keys({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 4}, "e": 3}) == ["a.c", "d", "e"]
    assert changed_keys({"a": 1}, {"a": 1}) == []
    assert changed_keys({"a": [1]}, {"a": [2]}) == ["a"]


def test_a_half_written_checkpoint_is_removed_and_the_one_before_used(tmp_path, caplog):
    folder = tmp_path / "ckpt"
    prepare_checkpoint_dir(folder, {"a": 1})
    make_checkpoint(folder, 5)
    make_checkpoint(folder, 10, complete=False)
    with caplog.at_level(logging.WARNING):
        resume = prepare_checkpoint_dir(folder, {"a": 1})
    assert checkpoint_step(resume) == 5
    assert "skipping" in caplog.text and "checkpoint-10: incomplete" in caplog.text
    assert not (folder / "checkpoint-10").exists()


# --- SIGTERM and out-of-memory in a real run -------------------------------------------------------


@pytest.fixture
def sigterm_at_step_2(monkeypatch):
    """Send this process SIGTERM at the end of step 2, as SLURM would before a kill."""
    on_step_end = ProgressRecorder.on_step_end

    def terminating(self, args, state, control, **kwargs):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return on_step_end(self, args, state, control, **kwargs)

    monkeypatch.setattr(ProgressRecorder, "on_step_end", terminating)


@pytest.mark.slow
@pytest.mark.skipif(
    not resolve_torch_compile("auto", "cpu")[0],
    reason="inductor needs a C++ compiler on the CPU: bash tests/setup_system.sh",
)
@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_compiled_run_learns_what_the_eager_run_learns(tiny_run, tmp_path, method):
    """torch_compile: the trainer runs inductor's kernels, and the losses match the eager run's."""
    from torch._dynamo.utils import counters

    # No LoRA dropout: inductor draws its own random numbers, so the two runs would drop different units.
    training = {"learning_rate": 1e-2, "max_steps": 6}
    results = {}
    for compiled in (False, True):
        counters.clear()
        settings = settings_for(method, **training, torch_compile=compiled)
        if method == "lora":
            settings["lora"]["lora_dropout"] = 0.0
        paths = run_paths(tiny_run, tmp_path / str(compiled))
        metrics, rows = train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
        results[compiled] = (metrics, [row["loss"] for row in rows], counters["stats"]["unique_graphs"])
        assert metrics["options"]["torch_compile"] is compiled
    (eager, eager_losses, eager_graphs), (compiled, compiled_losses, compiled_graphs) = results[False], results[True]
    assert eager_graphs == 0 and compiled_graphs > 0
    assert eager["eval_loss"] < eager["eval_loss_before_training"]  # it learned something to compare
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    assert compiled["eval_loss"] == pytest.approx(eager["eval_loss"], rel=1e-4)
    # The saved weights are the model's, not the compiled wrapper's (no "_orig_mod." in their names).
    from safetensors import safe_open

    saved = next((tmp_path / "True" / "model").glob("*.safetensors"))
    with safe_open(str(saved), "pt") as handle:
        assert handle.keys() and not any("_orig_mod" in key for key in handle.keys())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_without_the_padding_mask_learns_what_the_masked_run_learns(tiny_run, tmp_path, monkeypatch, method):
    """drop_padding_mask: the model sees padded batches without a mask, and every loss is the masked run's.

    LoRA keeps its dropout: both runs draw the same random numbers for the same (padded) shapes.
    """
    from ftcompare.fast_path import WithoutPaddingMask

    seen = []  # (padding in the batch, mask passed on) for each batch the model was given unmasked-able
    collate = WithoutPaddingMask.__call__

    def spying(self, features):
        mask = self.inner(features)["attention_mask"]
        batch = collate(self, features)
        seen.append((bool((mask == 0).any()), "attention_mask" in batch))
        return batch

    monkeypatch.setattr(WithoutPaddingMask, "__call__", spying)
    results = {}
    for drop in (False, True):
        settings = settings_for(
            method, learning_rate=1e-2, max_steps=6, drop_padding_mask=drop, lm_head_loss="full_logits"
        )
        metrics, rows = train_run(
            settings, run_paths(tiny_run, tmp_path / str(drop)), "cpu", "float32", False, {"f": 1}, FakeTelemetry()
        )
        assert metrics["options"]["drop_padding_mask"] is drop
        results[drop] = (metrics, [row["loss"] for row in rows])
    assert seen and (True, False) in seen and not any(passed for _, passed in seen)  # padded, and no mask passed
    (masked, masked_losses), (unmasked, unmasked_losses) = results[False], results[True]
    assert masked["eval_loss"] < masked["eval_loss_before_training"]  # it learned something to compare
    assert unmasked_losses == pytest.approx(masked_losses, rel=1e-5)
    assert unmasked["eval_loss"] == pytest.approx(masked["eval_loss"], rel=1e-5)
    # The token counts still tell padding apart.
    assert unmasked["train_nonpad_tokens_per_s"] < unmasked["train_tokens_per_s"]


def test_compiling_without_a_compiler_is_refused_before_training(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++")
    paths = run_paths(tiny_run, tmp_path)
    with pytest.raises(FtcompareError, match=r"^training.torch_compile: true, but no C\+\+ compiler"):
        train_run(settings_for(torch_compile=True), paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert not paths.model_out.exists() and not paths.checkpoints.exists()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_stops_and_fails(tiny_run, tmp_path, sigterm_at_step_2):
    handler_before = signal.getsignal(signal.SIGTERM)
    paths = run_paths(tiny_run, tmp_path)
    with pytest.raises(FtcompareError) as caught:
        train_run(settings_for(), paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert str(caught.value) == (
        f"run lora: stopped by SIGTERM at step 2; a checkpoint was saved in {paths.checkpoints}. Rerun to resume."
    )
    assert is_complete(paths.checkpoints / "checkpoint-2")
    state = json.loads((paths.checkpoints / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["stateful_callbacks"]["ProgressRecorder"]["attributes"]["elapsed_s"] > 0
    assert not paths.model_out.exists()
    assert signal.getsignal(signal.SIGTERM) is handler_before


@pytest.mark.slow
def test_a_resumed_run_s_tensorboard_log_has_every_step_once(tiny_run, tmp_path):
    """The steps logged after the last checkpoint by the interrupted job are dropped, not shown twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logged_steps(folder: Path) -> dict:
        events = EventAccumulator(str(folder))
        events.Reload()
        return {tag: [event.step for event in events.Scalars(tag)] for tag in ("train/loss", "eval/loss")}

    paths = run_paths(tiny_run, tmp_path)
    settings = settings_for(max_steps=4, save_steps=2, report_to=["tensorboard"])
    train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    # The eval loss before training (step 0) and after it (step 4).
    assert logged_steps(paths.tensorboard) == {"train/loss": [1, 2, 3, 4], "eval/loss": [0, 4]}
    # As if the job was killed after logging step 4, before its checkpoint was saved: steps 3 and 4 again.
    shutil.rmtree(paths.checkpoints / "checkpoint-4")
    metrics, _ = train_run(settings, paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert metrics["resumed_from_step"] == 2
    assert logged_steps(paths.tensorboard) == {"train/loss": [1, 2, 3, 4], "eval/loss": [0, 4]}
    assert len(list(paths.tensorboard.glob("events.out.tfevents.*"))) > 1  # written by both jobs


@pytest.mark.slow
def test_a_run_that_logs_to_no_tensorboard_still_makes_its_tensorboard_output(tiny_run, tmp_path):
    """The train rule declares the folder, so it must exist (empty) when report_to is []."""
    paths = run_paths(tiny_run, tmp_path)
    train_run(settings_for(max_steps=2, report_to=[]), paths, "cpu", "float32", False, {"f": 1}, FakeTelemetry())
    assert paths.tensorboard.is_dir() and not any(paths.tensorboard.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("method,advice", [("lora", "a smaller lora.r"), ("full", "the lora method")])
def test_out_of_memory_names_the_run_the_peak_and_what_to_try(tiny_run, tmp_path, monkeypatch, method, advice):
    mib = 2**20

    def out_of_memory(self, *args, **kwargs):
        # What torch would report on a GPU that filled up (this machine may have none).
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 70_000 * mib)
        monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a: 79_500 * mib)
        monkeypatch.setattr(
            torch.cuda, "get_device_properties", lambda *a: type("Properties", (), {"total_memory": 81_559 * mib})
        )
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU 80GB")
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SeededSFTTrainer, "train", out_of_memory)
    paths = run_paths(tiny_run, tmp_path)
    with pytest.raises(FtcompareError) as caught:
        train_run(settings_for(method), paths, "cuda", "float32", False, {"f": 1}, FakeTelemetry())
    assert str(caught.value) == (
        f"run {method}: out of GPU memory (peak 70,000 MiB allocated and 79,500 MiB reserved by torch, of "
        "81,559 MiB on Fake GPU 80GB). Try a smaller per_device_train_batch_size with more "
        f"gradient_accumulation_steps, training.gradient_checkpointing: true, bf16, or {advice}."
    )
    assert not paths.model_out.exists()


# --- the device ------------------------------------------------------------------------------------


@pytest.mark.parametrize("requested", ["auto", "cpu"])
def test_without_a_gpu_the_cpu_is_used_with_at_most_one_warning(monkeypatch, caplog, requested):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="ftcompare.devices"):
        assert devices.resolve_device(requested) == "cpu"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    expected = ["no GPU visible to torch: running on the CPU (set `device: cuda` to require a GPU)"]
    assert warnings == (expected if requested == "auto" else [])


def test_a_gpu_asked_for_and_not_there_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FtcompareError) as caught:
        devices.resolve_device("cuda")
    message = str(caught.value)
    assert message.startswith("device = 'cuda' but torch sees no GPU (torch.cuda.is_available() is False")
    assert "CUDA_VISIBLE_DEVICES" in message and "`device: auto` to allow the CPU" in message


def test_a_visible_gpu_is_used(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == "cuda" and devices.resolve_device("cuda") == "cuda"


# --- the seed in sampling --------------------------------------------------------------------------


def test_sampling_follows_the_seed():
    tokenizer = word_tokenizer()
    model = tiny_llama(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).eval()
    settings = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.0, "top_p": 1.0, "batch_size": 2}
    prompts = ["w1 w2", "w4 w5 w6"]

    def outputs(seed):
        return [r["output"] for r in generate_outputs(model, tokenizer, prompts, settings, seed, "m")]

    assert outputs(7) == outputs(7)
    assert outputs(7) != outputs(8)


# --- trust_remote_code -----------------------------------------------------------------------------


def model_loading_calls():
    """Every `X.from_pretrained(...)` call in the workflow's code, with where it is."""
    for path in sorted((REPO / "scripts").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
            ):
                yield path.relative_to(REPO), node


def test_every_model_or_tokenizer_load_passes_the_configured_trust_remote_code():
    calls = list(model_loading_calls())
    assert len(calls) >= 6
    for path, call in calls:
        receiver = ast.unparse(call.func.value)
        if receiver == "PeftModel":  # loads adapter weights only, never code
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        where = f"{path}:{call.lineno} {receiver}.from_pretrained"
        assert "trust_remote_code" in keywords, where
        assert not (
            isinstance(keywords["trust_remote_code"], ast.Constant) and keywords["trust_remote_code"].value is True
        ), where


def test_no_call_passes_a_token_so_only_the_environment_or_login_supply_one():
    for path in sorted((REPO / "scripts").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                passed = {k.arg for k in node.keywords}
                assert not passed & {"token", "use_auth_token", "hub_token"}, f"{path}:{node.lineno}"


@pytest.mark.slow
def test_the_report_says_when_remote_code_was_allowed(tmp_path):
    import yaml

    from ftcompare.config import config_hash
    from ftcompare.report.build import build_report
    from ftcompare.report.inputs import ReportInputPaths, load_report_inputs

    root = REPO / "tests" / "fixtures" / "results" / "embedded_cpu"
    runs = sorted(p.name for p in (root / "runs").iterdir())
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    raw.update(trust_remote_code=True, runs={run: {"method": "full" if run == "full" else "lora"} for run in runs})
    config = validate_config(raw, search_dirs=[REPO])
    paths = ReportInputPaths(
        metrics=[root / "runs" / run / "metrics.json" for run in runs],
        log_history=[root / "runs" / run / "log_history.csv" for run in runs],
        train_telemetry=[root / "runs" / run / "telemetry.json" for run in runs],
        generations=[root / "generations" / f"{model}.jsonl" for model in ["base", *runs]],
        data_card=root / "data" / "data_card.json",
        base_card=root / "models" / "base" / "ftcompare_model.json",
        template=REPO / "report" / "report.html.j2",
        style=REPO / "report" / "style.css",
    )
    inputs = load_report_inputs(paths, runs, config, config_hash(config), {}, "t")
    build_report(inputs, tmp_path / "report.html", tmp_path / "figures", tmp_path / "tables")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "on: the model repository’s own Python code was allowed to run" in html
    assert "off: no code from model repositories was run" not in html
