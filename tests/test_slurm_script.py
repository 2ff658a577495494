"""tests/cluster/slurm.sh's `stop` on its own, in folders of the test's (no daemon is touched)."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "cluster" / "slurm.sh"
MARK = "# Written by tests/cluster/slurm.sh from tests/cluster/{name}.in\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="slurm.sh runs as root only")


def stop(etc: Path, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FTCOMPARE_SLURM_ETC": str(etc), "FTCOMPARE_SLURM_STATE": str(state)}
    return subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=60)


def test_stop_removes_the_configs_it_wrote_and_nothing_else(tmp_path):
    """A config left behind sends SLURM's clients to a controller that is gone (9 s per `snakemake`)."""
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("slurm.conf", "gres.conf", "slurmdbd.conf"):
        (etc / name).write_text(MARK.format(name=name) + "ClusterName=ftcompare\n")
    (etc / "cgroup.conf").write_text("# the site's own\n")

    result = stop(etc, tmp_path / "state")

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in etc.iterdir()) == ["cgroup.conf"]


def test_stop_leaves_a_real_cluster_s_config_alone(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    site_config = "ClusterName=site\nSlurmctldHost=head\n"
    (etc / "slurm.conf").write_text(site_config)

    result = stop(etc, tmp_path / "state")

    assert result.returncode == 0, result.stderr
    assert (etc / "slurm.conf").read_text() == site_config
