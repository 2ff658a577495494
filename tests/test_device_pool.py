"""The GPU pool (ftcompare.device_pool) and what a job takes from it (ftcompare.job_devices,
ftcompare.node_gpus), driven by fake device lists: concurrent jobs in separate processes get disjoint
devices, a killed job frees its own, a job waits while every device is held and says by whom."""

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes.fake_amdsmi import FakeGcd, make_amdsmi
from fakes.fake_pynvml import FakeNvidiaGpu, make_pynvml

from conftest import REPO
from ftcompare import node_gpus
from ftcompare.device_pool import DevicePool, default_lock_dir, lock_file_name
from ftcompare.errors import FtcompareError
from ftcompare.job_devices import THREADS_WITHOUT_CORES, assign_job_devices, threads_for_job

POOL_JOB = REPO / "tests" / "helpers" / "pool_job.py"


def wait_for(predicate, timeout_s=60.0, what="a condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Jobs:
    """pool_job.py processes on one fake node; each holds its devices until released or killed."""

    def __init__(self, tmp_path, gpus):
        self.dir = tmp_path
        self.env = {
            **os.environ,
            "FTCOMPARE_GPUS": gpus,
            "FTCOMPARE_GPU_LOCK_DIR": str(tmp_path / "locks"),
            "PYTHONPATH": "",
        }
        for name in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "SLURM_JOB_ID"):
            self.env.pop(name, None)
        self.processes = {}

    def start(self, name, count=1):
        out = self.dir / f"{name}.json"
        self.processes[name] = subprocess.Popen(
            [sys.executable, str(POOL_JOB), str(count), str(out), name],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            text=True,
        )
        return out

    def record(self, name):
        out = self.dir / f"{name}.json"
        return json.loads(out.read_text()) if out.exists() else None

    def wait(self, name):
        process = self.processes[name]

        def ready():
            if process.poll() is not None and self.record(name) is None:
                raise AssertionError(f"{name} exited {process.returncode}: {process.stderr.read()}")
            return self.record(name)

        return wait_for(ready, what=f"{name} to take its devices")

    def release(self, name):
        process = self.processes.pop(name)
        process.stdin.close()
        process.wait(timeout=30)

    def kill(self, name):
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self):
        for process in self.processes.values():
            process.kill()
            process.wait(timeout=30)


@pytest.fixture
def jobs(tmp_path):
    made = []

    def make(gpus):
        made.append(Jobs(tmp_path, gpus))
        return made[-1]

    yield make
    for group in made:
        group.stop_all()


@pytest.fixture
def environ(tmp_path):
    """A job's environment on a node with no GPU variable set; the lock folder is the test's own."""
    return {"FTCOMPARE_GPU_LOCK_DIR": str(tmp_path / "locks")}


@pytest.fixture
def no_vendor_tools(monkeypatch):
    """A CPU-only machine: NVML, nvidia-smi and amdsmi all find nothing."""
    monkeypatch.setattr(node_gpus, "PROBES", (("nvidia", lambda: (None, "NVML: none")),))


def test_concurrent_jobs_get_disjoint_devices_and_the_surplus_waits_for_freed_ones(jobs):
    node = jobs("0,1,2,3")
    names = [f"job{i}" for i in range(6)]
    for name in names:
        node.start(name)
    wait_for(lambda: sum(node.record(n) is not None for n in names) >= 4, what="four jobs on the four devices")
    time.sleep(0.5)  # time for a fifth to take a device if the pool were wrong
    holders = [n for n in names if node.record(n) is not None]
    waiting = [n for n in names if node.record(n) is None]
    assert len(holders) == 4 and all(node.processes[n].poll() is None for n in waiting)
    assert sorted(node.record(n)["devices"][0] for n in holders) == ["0", "1", "2", "3"]
    assert all(node.record(n)["visible"] == node.record(n)["devices"][0] for n in holders)
    freed = {node.record(n)["devices"][0] for n in holders[:2]}
    for name in holders[:2]:
        node.release(name)
    assert {node.wait(name)["devices"][0] for name in waiting} == freed


def test_a_killed_job_frees_its_devices(jobs, environ):
    node = jobs("0,1")
    node.start("a")
    node.start("b")
    devices = {name: node.wait(name)["devices"] for name in ("a", "b")}
    node.kill("a")  # SIGKILL: no handler runs, the kernel drops the lock
    environ["FTCOMPARE_GPUS"] = "0,1"
    environ["FTCOMPARE_GPU_LOCK_DIR"] = str(node.dir / "locks")
    job = assign_job_devices(1, environ, holder="c", timeout_s=10, poll_s=0.05)
    assert job.devices == tuple(devices["a"])
    job.lease.release()


def test_every_device_held_waits_then_says_who_holds_them(jobs, environ):
    node = jobs("0,1")
    node.start("train lora", 2)
    pid = node.wait("train lora")["pid"]
    environ.update(FTCOMPARE_GPUS="0,1", FTCOMPARE_GPU_LOCK_DIR=str(node.dir / "locks"))
    told = []
    with pytest.raises(FtcompareError) as caught:
        assign_job_devices(1, environ, holder="generate base", timeout_s=0.3, poll_s=0.05, on_wait=told.append)
    message = str(caught.value)
    assert message.startswith("generate base waited 0 s for 1 free GPU(s); held: GPU 0 by pid")
    assert f"GPU 1 by pid {pid} train lora" in message and "--resources gpu=<number of GPUs>" in message
    assert told and told[0].startswith("generate base waits for 1 free GPU(s): held: GPU 0 by pid")
    assert environ.get("CUDA_VISIBLE_DEVICES") is None  # a job that got nothing set nothing


def test_a_waiting_job_goes_on_as_soon_as_a_device_is_freed(tmp_path):
    pool = DevicePool(["0"], tmp_path)
    first = pool.take(1, "first")
    threading.Timer(0.3, first.release).start()
    second = DevicePool(["0"], tmp_path).take(1, "second", timeout_s=30, poll_s=0.05)
    assert second.devices == ("0",)
    assert (tmp_path / "gpu-0.lock").read_text() == f"pid {os.getpid()} second\n"
    second.release()


def test_more_devices_than_the_pool_has_fails_at_once(environ):
    environ["FTCOMPARE_GPUS"] = "0,1"
    with pytest.raises(FtcompareError, match=r"^train full asks for 3 GPU\(s\) but the pool has 2 \(0,1\)$"):
        assign_job_devices(3, environ, holder="train full")


def test_a_job_of_several_devices_takes_all_or_nothing(tmp_path):
    pool = DevicePool(["0", "1", "2"], tmp_path)
    one = pool.take(1)
    two = pool.try_take(2)
    assert two.devices == ("1", "2")
    assert pool.try_take(1) is None
    two.release()
    held_one = DevicePool(["0", "1", "2"], tmp_path).take(1)  # takes 1, leaving only 2 free
    assert held_one.devices == ("1",)
    assert pool.try_take(2) is None
    assert pool.holders() == {"0": f"pid {os.getpid()}", "1": f"pid {os.getpid()}", "2": None}
    one.release()
    held_one.release()


def test_lock_files_have_safe_names_and_live_in_a_folder_per_user():
    assert lock_file_name("3") == "gpu-3.lock"
    assert lock_file_name("MIG-GPU-8e3c/1/0") == "gpu-MIG-GPU-8e3c_1_0.lock"
    assert default_lock_dir({}) == Path(f"/tmp/ftcompare-gpus-{os.getuid()}")
    assert default_lock_dir({"FTCOMPARE_GPU_LOCK_DIR": "/shared/locks"}) == Path("/shared/locks")
    with pytest.raises(FtcompareError, match="lists a device twice: 0,1,0"):
        DevicePool(["0", "1", "0"], Path("/nonexistent"))


def test_a_job_without_a_gpu_sees_none(environ):
    job = assign_job_devices(0, environ)
    # CUDA hides every device for an empty value; HIP reads an empty value as unset, so -1 (a list that ends at once).
    assert (environ["CUDA_VISIBLE_DEVICES"], environ["HIP_VISIBLE_DEVICES"]) == ("", "-1")
    assert job.devices == () and job.record()["assignment"].startswith("none: the job asks for no GPU")


def test_on_a_cpu_only_machine_nothing_changes(environ, no_vendor_tools):
    before = dict(environ)
    job = assign_job_devices(1, environ)
    assert environ == before and job.devices == () and job.lease is None
    assert job.assignment == "none: no GPU found (NVML: none); the job runs as it would without the pool"


def test_gpus_counted_by_nvml_are_numbered_in_pci_bus_order(environ, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", make_pynvml([FakeNvidiaGpu(bus=b) for b in (0x17, 0x65, 0xB3)]))
    held = DevicePool(["0"], Path(environ["FTCOMPARE_GPU_LOCK_DIR"])).take(1)
    job = assign_job_devices(1, environ, holder="train lora")
    assert job.devices == ("1",) and environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # so that CUDA's 1 is NVML's (and nvidia-smi's) 1
    assert job.assignment.startswith("from the device pool: CUDA_VISIBLE_DEVICES=1 of 0,1,2 (3 GPU(s) counted by NVML")
    job.lease.release()
    held.release()


def test_gpus_counted_by_amdsmi_are_given_through_hip_visible_devices(environ, monkeypatch):
    monkeypatch.setattr(node_gpus, "PROBES", (("amd", node_gpus._count_amdsmi),))
    gcds = [FakeGcd(bdf="0000:c1:00.0"), FakeGcd(bdf="0000:c6:00.0")]
    monkeypatch.setitem(sys.modules, "amdsmi", make_amdsmi("6.2", gcds))
    job = assign_job_devices(1, environ)
    assert environ["HIP_VISIBLE_DEVICES"] == "0" and "CUDA_VISIBLE_DEVICES" not in environ
    assert "2 GPU(s) counted by amdsmi" in job.assignment
    job.lease.release()


def test_a_visibility_list_set_before_the_workflow_is_the_pool(environ):
    environ["CUDA_VISIBLE_DEVICES"] = "4,5,-1,6"  # CUDA stops at the first invalid entry: 6 is not visible
    before = dict(environ)
    held = assign_job_devices(1, dict(before))
    job = assign_job_devices(1, environ)
    assert (held.devices, job.devices) == (("4",), ("5",)) and environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert "CUDA_DEVICE_ORDER" not in environ  # the user's numbering is kept as they wrote it
    with pytest.raises(FtcompareError, match=r"waited 0 s for 1 free GPU\(s\); held: GPU 4 by pid \d+; GPU 5"):
        assign_job_devices(1, dict(before), timeout_s=0)
    held.lease.release()
    job.lease.release()


def test_ftcompare_gpus_names_hip_devices_on_a_rocm_machine(environ, tmp_path):
    kfd = tmp_path / "kfd"
    kfd.touch()
    environ["FTCOMPARE_GPUS"] = "0,1"
    job = assign_job_devices(1, environ, kfd=kfd)
    assert environ["HIP_VISIBLE_DEVICES"] == "0" and "CUDA_VISIBLE_DEVICES" not in environ
    job.lease.release()


def test_hip_takes_an_empty_hip_visible_devices_as_unset(environ):
    environ.update(HIP_VISIBLE_DEVICES="", ROCR_VISIBLE_DEVICES="2,3")
    job = assign_job_devices(1, environ)
    assert job.devices == ("2",) and environ["ROCR_VISIBLE_DEVICES"] == "2"
    job.lease.release()


def test_under_slurm_the_schedulers_assignment_is_kept(environ):
    environ.update(SLURM_JOB_ID="4242", CUDA_VISIBLE_DEVICES="0", FTCOMPARE_GPU_LOCK_DIR="/nonexistent/never-made")
    job = assign_job_devices(1, environ)
    assert job.devices == ("0",) and job.lease is None and environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert job.assignment == "as SLURM gave them (CUDA_VISIBLE_DEVICES='0' set before the job)"
    gres_only = {"SLURM_JOB_ID": "4242", "SLURM_JOB_GPUS": "3"}
    assert assign_job_devices(1, gres_only).devices == ("3",) and "CUDA_VISIBLE_DEVICES" not in gres_only
    with pytest.raises(FtcompareError, match=r"asks for 2 GPU\(s\) but SLURM gave it 1"):
        assign_job_devices(2, dict(environ))


def test_a_local_workflow_inside_a_bigger_slurm_allocation_pools_it(environ, tmp_path):
    environ.update(SLURM_JOB_ID="4242", CUDA_VISIBLE_DEVICES="0,1,2,3")
    job = assign_job_devices(1, environ)
    assert job.devices == ("0",) and environ["CUDA_VISIBLE_DEVICES"] == "0"
    # Allocation-relative numbers: another allocation's device 0 is another GPU, so its locks are apart.
    assert (tmp_path / "locks" / "slurm-4242" / "gpu-0.lock").exists()
    job.lease.release()


def test_the_pool_code_imports_no_torch():
    """The job must set its visibility variable before anything initialises CUDA or HIP."""
    code = (
        "import sys; sys.path.insert(0, 'scripts')\n"
        "from ftcompare.script_runtime import take_job_devices\n"
        "from ftcompare import node_gpus; node_gpus.node_gpus({})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize("script", ["train.py", "generate.py", "evaluate.py", "analyse_weights.py", "run_lm_eval.py"])
def test_entry_scripts_take_their_gpus_before_any_other_import(script):
    module = ast.parse((REPO / "scripts" / script).read_text())
    statements = module.body[1:] if ast.get_docstring(module) else module.body
    assert [ast.unparse(statement) for statement in statements[:2]] == [
        "from ftcompare.script_runtime import run_script, take_job_devices",
        "JOB_DEVICES = take_job_devices(snakemake)",
    ]


@pytest.mark.parametrize(
    ("cores", "gpus_given", "job_gpus", "threads"),
    [
        (64, None, 1, 64),  # no --resources gpu: one job at a time, on every core
        (64, 8, 1, 8),  # one GPU of 8: an eighth of the cores
        (64, 8, 2, 16),  # a job of two GPUs: twice that
        (6, 8, 1, 1),  # never less than one
        (16, 4, 0, 16),  # a CPU job: every core, as on a CPU-only machine
        (None, None, 1, THREADS_WITHOUT_CORES),  # no --cores (a cluster executor): no error
        (None, None, 2, 2 * THREADS_WITHOUT_CORES),
    ],
)
def test_threads_per_job_follow_from_the_cores_and_gpus_given(cores, gpus_given, job_gpus, threads):
    assert threads_for_job(cores, gpus_given, job_gpus) == threads
