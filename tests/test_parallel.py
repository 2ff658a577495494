"""How a run uses several devices (ftcompare.parallel): what a job refuses before loading the model, for
GPUs counted by a monkeypatched torch; what the trainer is told per strategy; and FSDP2's sharded
weights, gathered and consolidated, on a CPU mesh of two gloo processes (accelerate turns FSDP on only on
GPUs, so the trainer's side of it waits for a GPU machine)."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO
from ftcompare.checkpoints import is_complete
from ftcompare.errors import FtcompareError
from ftcompare.parallel import (
    check_devices,
    check_strategy_applied,
    model_placement,
    processes,
    trainer_arguments,
)
from ftcompare.speed_options import resolve_speed_options
from ftcompare.trainer_builder import build_sft_config


def training(strategy="single", devices=1, **overrides) -> dict:
    from helpers.tiny_run import settings_for

    return settings_for("full", strategy=strategy, devices=devices, **overrides)["training"]


@pytest.fixture
def gpus(monkeypatch):
    """Make torch see `n` GPUs."""

    def see(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return see


def test_a_single_process_run_that_sees_several_gpus_is_refused_before_the_model_loads(gpus):
    """transformers would wrap the model in DataParallel over them, which TRL refuses once the model has loaded."""
    gpus(8)
    with pytest.raises(FtcompareError) as caught:
        check_devices("lora", training(), "cuda")
    assert str(caught.value) == (
        "run lora: training.strategy: single trains on one GPU, but torch sees 8; give the job one "
        "(CUDA_VISIBLE_DEVICES or HIP_VISIBLE_DEVICES; the README's --resources gpu=N does it per job), "
        "or set training.strategy: ddp, fsdp or device_map with training.devices"
    )
    gpus(1)
    check_devices("lora", training(), "cuda")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "device_map"])
def test_a_run_asking_for_more_gpus_than_torch_sees_is_refused(gpus, strategy):
    gpus(2)
    check_devices("full", training(strategy, 2), "cuda")
    with pytest.raises(FtcompareError, match=rf"^run full: training.strategy: {strategy} with training.devices: 4, "):
        check_devices("full", training(strategy, 4), "cuda")
    gpus(0)
    with pytest.raises(FtcompareError, match="but torch sees 0 GPUs; give the job 4 or lower training.devices$"):
        check_devices("full", training(strategy, 4), "cuda")


@pytest.mark.parametrize("strategy", ["fsdp", "device_map"])
def test_fsdp_and_device_map_are_refused_on_the_cpu_and_ddp_runs_there(gpus, strategy):
    """`device: auto` on a machine without GPUs: the config could not tell, the job does."""
    gpus(0)
    with pytest.raises(FtcompareError) as caught:
        check_devices("full", training(strategy, 2), "cpu")
    assert str(caught.value) == (
        f"run full: training.strategy: {strategy} needs GPUs, and this job runs on the CPU; use strategy: ddp "
        f"(gloo processes on the CPU) or single, or run where torch sees 2 GPUs"
    )
    check_devices("full", training("ddp", 2), "cpu")


def test_ddp_and_fsdp_run_a_process_per_device_device_map_one_for_all():
    counts = [processes(training(strategy, 4)) for strategy in ("device_map", "ddp", "fsdp")]
    assert counts == [1, 4, 4] and processes(training()) == 1


def test_device_map_spreads_the_model_over_the_first_devices_gpus_and_nothing_else(gpus, monkeypatch):
    gpus(4)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (60e9 + index, 64e9))
    assert model_placement(training("device_map", 2)) == {"device_map": "auto", "max_memory": {0: 60e9, 1: 60e9 + 1}}
    assert model_placement(training("ddp", 2)) == {} and model_placement(training()) == {}


def test_the_trainer_is_told_fsdp2_with_sharded_checkpoints_and_fsdp_s_own_activation_checkpointing(tmp_path):
    settings = training("fsdp", 2, gradient_checkpointing=True)
    args = build_sft_config(settings, 5, tmp_path, "cpu", resolve_speed_options(settings, "cpu"))
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["state_dict_type"] == "SHARDED_STATE_DICT"
    assert plugin["activation_checkpointing"] is True and args.activation_checkpointing is False

    ddp = training("ddp", 2, gradient_checkpointing=True)
    args = build_sft_config(ddp, 5, tmp_path, "cpu", resolve_speed_options(ddp, "cpu"))
    assert args.fsdp_plugin_args is None and args.ddp_find_unused_parameters is False
    assert args.activation_checkpointing is True
    assert trainer_arguments(training()) == {}


def test_a_run_asking_for_fsdp_that_accelerate_did_not_enable_stops():
    trainer = SimpleNamespace(is_fsdp_enabled=False, accelerator=SimpleNamespace(distributed_type="MULTI_CPU"))
    with pytest.raises(FtcompareError, match=r"^training.strategy: fsdp, but accelerate did not enable FSDP"):
        check_strategy_applied(training("fsdp", 2), trainer)
    check_strategy_applied(training("ddp", 2), trainer)


@pytest.mark.slow
def test_fsdp2_shards_trains_gathers_and_consolidates_on_a_cpu_mesh(tmp_path):
    """torch's fully_shard over two gloo processes: parameters sharded; after one step, the gathered weights
    (what the fsdp strategy saves as the model) and a consolidated sharded checkpoint equal, bit for bit, an
    unsharded copy that took the same step; and such a checkpoint counts as complete for a resume."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command += [str(REPO / "tests" / "helpers" / "fsdp_cpu.py"), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world"] == 2 and result["sharded"]
    assert result["moved"] > 1e-3  # the step changed the weights, so the comparisons below mean something
    assert result["gathered_vs_unsharded"] == 0.0
    assert result["consolidated_vs_unsharded"] == 0.0

    checkpoint = tmp_path / "checkpoint-1"
    assert not is_complete(checkpoint)  # trainer_state.json, which the trainer writes last, is missing
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    assert is_complete(checkpoint)
    (checkpoint / "pytorch_model_fsdp_0" / ".metadata").unlink()
    assert not is_complete(checkpoint)
