import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from ftcompare.config import validate_config  # noqa: E402


def load_yaml(name):
    return yaml.safe_load((REPO / "config" / name).read_text(encoding="utf-8"))


@pytest.fixture
def default_config():
    return validate_config(load_yaml("config.yaml"), search_dirs=[REPO])


@pytest.fixture
def blog_config():
    return validate_config(load_yaml("blog.yaml"), search_dirs=[REPO])


@pytest.fixture(scope="session", autouse=True)
def shared_plan_cache(tmp_path_factory):
    """One plan cache for every workflow the tests run, in whatever folder (FTCOMPARE_PLAN_CACHE, read by
    ftcompare.plan_resources): each workdir of its own would plan again on its first start, seconds each."""
    folder = tmp_path_factory.getbasetemp().parent / "plan-cache"  # shared by the xdist workers
    folder.mkdir(exist_ok=True)
    os.environ["FTCOMPARE_PLAN_CACHE"] = str(folder)
    return folder


# The files that take minutes (whole studies, many workflow runs), longest first: `make test` hands whole
# files to its workers in collection order, and starting these first keeps one long file from running alone
# at the end. pytest's --durations list in each run shows what is long.
LONGEST_FILES = [
    "test_workflow.py",
    "test_slurm.py",
    "test_sweep.py",
    "test_reliability_workflow.py",
    "test_launch.py",
    "test_lm_eval.py",
    "test_gpu_node_workflow.py",
]


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: each file keeps its own order
