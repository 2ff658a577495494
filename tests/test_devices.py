"""Which device a job runs on (ftcompare.devices): the CPU with at most one warning, a GPU asked for
and not there refused; and the torch build a training job records, with the report's line built on it."""

import logging
import sys

import pytest
import torch

from ftcompare import devices
from ftcompare.devices import torch_build
from ftcompare.errors import FtcompareError
from ftcompare.report.provenance import torch_version_and_build


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


@pytest.mark.parametrize(
    "hip, cuda, expected",
    [("6.2.41134", None, "ROCm 6.2.41134"), (None, "12.4", "CUDA 12.4"), (None, None, "CPU")],
)
def test_torch_build_names_what_torch_was_compiled_for(monkeypatch, hip, cuda, expected):
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.version, "cuda", cuda)
    assert torch_build() == expected


def test_the_report_names_the_torch_version_and_its_build(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.6.0+rocm6.2.4")
    monkeypatch.setattr(torch.version, "hip", "6.2.41134")
    assert torch_version_and_build() == "torch 2.6.0+rocm6.2.4 (ROCm 6.2.41134 build)"
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert torch_version_and_build() == "torch 2.6.0+rocm6.2.4 (CPU build)"


def test_the_report_works_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert torch_version_and_build() == "torch is not installed in the report's environment"
