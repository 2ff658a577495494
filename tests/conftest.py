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
