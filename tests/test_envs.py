"""The pinned conda env files stay in step with the pip requirements."""

import re

import yaml

from conftest import REPO

SPEC = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)\s*([=<>!~].*)?$")


def parse_requirements(path):
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-r"):
            continue
        name, spec = SPEC.match(line).groups()
        pins[name.lower().replace("_", "-")] = spec
    return pins


def env_pip_pins(path):
    env = yaml.safe_load(path.read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, f"{path.name}: expected one pip: section"
    pins = {}
    for line in pip_lists[0]:
        name, spec = SPEC.match(line.strip()).groups()
        pins[name.lower().replace("_", "-")] = spec
    return env, pins


def test_every_env_pin_equals_the_requirements_pin():
    requirements = parse_requirements(REPO / "requirements.txt")
    env_files = sorted((REPO / "envs").glob("*.yaml"))
    assert {p.name for p in env_files} >= {"train.yaml", "report.yaml"}
    covered = set()
    for path in env_files:
        env, pins = env_pip_pins(path)
        assert "python=3.11" in env["dependencies"]
        for name, spec in pins.items():
            assert name in requirements, f"{path.name}: {name} is not in requirements.txt"
            assert spec == requirements[name], (
                f"{path.name}: {name}{spec} but requirements.txt has {requirements[name]}"
            )
        covered |= set(pins)
    # snakemake runs the jobs; it is not needed inside their environments.
    assert set(requirements) - covered == {"snakemake"}


def test_requirements_pin_everything_but_torch():
    requirements = parse_requirements(REPO / "requirements.txt")
    for name, spec in requirements.items():
        if name == "torch":
            assert spec.startswith(">="), "torch stays a range so an installed ROCm/CUDA build is kept"
        else:
            assert spec and spec.startswith("=="), f"{name} is not pinned"
