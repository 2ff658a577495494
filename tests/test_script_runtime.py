"""What every entry script does around its work (ftcompare.script_runtime), and how its process ends."""

import ast
import json
import os
import subprocess
import sys

from conftest import REPO


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_the_collector_skips_the_imports_and_a_job_ends_with_its_output_complete(tmp_path):
    """Off while the libraries import, on for the job with what they made frozen, frozen again at its end
    (bench/job_collector.py has what that saves); a file the job left open is still flushed, its atexit
    handlers still run, its log has its lines."""
    code = """
import atexit, gc, json, logging, types
from ftcompare.script_runtime import run_script
seen = {"while importing": gc.isenabled()}
import torch

def main(smk):
    global left_open
    seen.update({"in the job": gc.isenabled(), "frozen in the job": gc.get_freeze_count()})
    logging.getLogger("ftcompare.job").info("working")
    left_open = open("out.txt", "w")
    left_open.write("x" * 100_000)
    atexit.register(lambda: open("atexit.txt", "w").write("ran"))
    made_by_the_job.extend([] for _ in range(50_000))

made_by_the_job = []
run_script(main, types.SimpleNamespace(rule="job", log=["job.log"]))
seen["frozen at the end"] = gc.get_freeze_count()
json.dump(seen, open("seen.json", "w"))
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, (tmp_path / "job.log").read_text()
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["while importing"] is False and seen["in the job"] is True
    assert seen["frozen in the job"] > 100_000  # what importing torch made
    assert seen["frozen at the end"] >= seen["frozen in the job"] + 50_000
    assert (tmp_path / "out.txt").read_text() == "x" * 100_000
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert "INFO ftcompare.job: working" in (tmp_path / "job.log").read_text()


def test_every_entry_script_imports_the_runtime_before_anything_else():
    for script in sorted((REPO / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text(encoding="utf-8"))
        first = next(node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom))
        assert isinstance(first, ast.ImportFrom) and first.module == "ftcompare.script_runtime", script.name


def test_a_failing_job_still_says_why_and_exits_1(tmp_path):
    code = """
import types
from ftcompare.errors import FtcompareError
from ftcompare.script_runtime import run_script

def main(smk):
    raise FtcompareError("data.name = 'x': no such file")

run_script(main, types.SimpleNamespace(rule="prepare_data", log=["job.log"]))
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 1
    assert done.stderr == "ftcompare: rule prepare_data: data.name = 'x': no such file\n(full log: job.log)\n"


def test_the_dag_s_plan_freezes_what_building_it_imported(tmp_path):
    """Snakemake's process imports torch, transformers and PEFT to plan (no cached plan here); their objects
    are frozen after, and the collector is on again."""
    code = f"""
import gc, sys, yaml
from ftcompare.config import validate_config
from ftcompare.plan import plan_inputs
from ftcompare.plan_resources import DagPlan

config = validate_config(yaml.safe_load(open({str(REPO / "config" / "config.yaml")!r})), [{str(REPO)!r}])
plan = DagPlan(plan_inputs(config), {str(tmp_path / "cache")!r}, [{str(REPO)!r}])
assert gc.get_freeze_count() == 0
print(plan.load_mem_mb(), gc.get_freeze_count(), int(gc.isenabled()))
"""
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    mem_mb, frozen, enabled = map(int, done.stdout.split())
    assert 4000 < mem_mb < 16000 and frozen > 100_000 and enabled
