"""The workflow's jobs send no usage telemetry to the Hub unless the user asks for it."""

import os
import subprocess
import sys

from conftest import REPO

PROBE = "import ftcompare.training, huggingface_hub.constants as c; print(c.HF_HUB_DISABLE_TELEMETRY)"


def _probe(extra_env: dict) -> str:
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE")}
    env.update({"PYTHONPATH": str(REPO / "scripts"), **extra_env})
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True, timeout=300
    ).stdout.strip()


def test_importing_the_library_turns_hub_telemetry_off():
    # ftcompare.training imports TRL, whose trainers send the ping when built.
    assert _probe({}) == "True"


def test_a_users_own_setting_is_kept():
    assert _probe({"HF_HUB_DISABLE_TELEMETRY": "0"}) == "False"
