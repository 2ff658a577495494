"""One GPU per job on a (fake) GPU node, through the real snakemake CLI: two concurrent jobs of a tiny
workflow take their devices as the entry scripts do and each gets its own; the real workflow's rules
ask for one GPU and their share of the cores under `--resources gpu=N`, and keep every core without it."""

import json
import re
import shutil

import pytest
import yaml
from helpers.workflow import SCENARIOS, SNAKEFILE, snakemake

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def no_gpu_variables(monkeypatch):
    """The variables a GPU machine or SLURM may have set would change what the tests see."""
    for name in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)


def fake_node(tmp_path, gpus="0,1"):
    """The environment of a node with these GPUs (FTCOMPARE_GPUS), its locks in the test's own folder."""
    return {"FTCOMPARE_GPUS": gpus, "FTCOMPARE_GPU_LOCK_DIR": str(tmp_path / "locks")}


def test_two_concurrent_jobs_each_get_a_gpu_of_their_own(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    snakefile = REPO / "tests" / "gpu_node" / "Snakefile"
    snakemake(workdir, "--cores", "2", "--resources", "gpu=2", env=fake_node(tmp_path), snakefile=snakefile)
    records = [json.loads((workdir / "out" / f"{i}.json").read_text()) for i in (1, 2)]
    assert all(r["all_jobs_running_at_once"] for r in records), records
    assert sorted(d for r in records for d in r["devices"]) == ["0", "1"]
    assert [r["CUDA_VISIBLE_DEVICES"] for r in records] == [r["devices"][0] for r in records]
    assert [r["threads"] for r in records] == [1, 1]  # 2 cores over 2 GPUs
    assert all(r["assignment"].startswith("from the device pool: CUDA_VISIBLE_DEVICES=") for r in records)


def planned(workdir, *args, env):
    """{rule: [(threads, resources)]} of what `snakemake -n` would run."""
    out = snakemake(workdir, "-n", *args, "--configfile", "e2e.yaml", env=env, snakefile=SNAKEFILE).stdout
    jobs = {}
    for block in re.split(r"\n(?=\[.*\]\nrule )", out):
        rule = re.search(r"^rule (\w+):", block, re.MULTILINE)
        if not rule:
            continue
        threads = re.search(r"^\s+threads: (\d+)", block, re.MULTILINE)
        resources = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        pairs = dict(item.split("=", 1) for item in resources.group(1).split(", ")) if resources else {}
        jobs.setdefault(rule.group(1), []).append((int(threads.group(1)) if threads else 1, pairs.get("gpu")))
    return jobs


@pytest.mark.parametrize(
    ("device", "args", "train", "base_model"),
    [
        ("auto", ["--cores", "4", "--resources", "gpu=2"], (2, "1"), 4),  # a GPU each, half the cores
        ("auto", ["--cores", "4"], (4, "1"), 4),  # no --resources gpu: one job at a time, every core
        ("cpu", ["--cores", "4", "--resources", "gpu=2"], (4, "0"), 4),  # device: cpu asks for no GPU
    ],
)
def test_the_workflows_jobs_ask_for_a_gpu_and_their_share_of_the_cores(tmp_path, device, args, train, base_model):
    config = yaml.safe_load((SCENARIOS / "config_default.yaml").read_text(encoding="utf-8"))
    config["device"] = device
    (tmp_path / "e2e.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    jobs = planned(tmp_path, *args, env=fake_node(tmp_path))
    assert set(jobs["train"]) == set(jobs["generate"]) == {train}
    assert jobs["base_model"] == [(base_model, None)]


def test_without_gpus_on_the_machine_auto_asks_for_none(tmp_path):
    """A CPU-only machine (an empty FTCOMPARE_GPUS stands for one): jobs run one at a time, as ever."""
    shutil.copy(SCENARIOS / "config_default.yaml", tmp_path / "e2e.yaml")
    config = yaml.safe_load((tmp_path / "e2e.yaml").read_text(encoding="utf-8"))
    config["device"] = "auto"
    (tmp_path / "e2e.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    jobs = planned(tmp_path, "--cores", "4", env=fake_node(tmp_path, gpus=""))
    assert set(jobs["train"]) == {(4, "0")}
