"""The torch build: what a training job records (devices.torch_build) and the report's line built on it."""

import sys

import pytest
import torch

from ftcompare.devices import torch_build
from ftcompare.report.provenance import torch_version_and_build


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
