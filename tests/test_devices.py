"""Which device a job runs on (ftcompare.devices): the CPU with at most one warning, a GPU asked for
and not there refused."""

import logging

import pytest
import torch

from ftcompare import devices
from ftcompare.errors import FtcompareError


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
