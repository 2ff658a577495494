"""The speed options resolved once per run (ftcompare.speed_options): bf16 and torch.compile `auto`, and
what metrics.json reports of them."""

import pytest
import torch

from ftcompare.errors import FtcompareError
from ftcompare.speed_options import (
    packed_layout,
    resolve_bf16,
    resolve_speed_options,
    resolve_torch_compile,
    training_options,
)


def test_bf16_auto_means_a_gpu_with_bf16():
    assert resolve_bf16("auto", "cpu") is False
    assert resolve_bf16(True, "cpu") is True and resolve_bf16(False, "cuda") is False
    if not torch.cuda.is_available():
        assert resolve_bf16("auto", "cuda") is False


def test_torch_compile_auto_needs_the_compiler_inductor_runs(monkeypatch, tmp_path):
    import importlib.util

    compiler = tmp_path / "my-c++"
    compiler.write_text("#!/bin/sh\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CXX", "my-c++")
    assert resolve_torch_compile("auto", "cpu") == (True, f"auto: inductor builds CPU kernels with {compiler}")
    assert resolve_torch_compile(True, "cpu") == (True, "asked for in the config")
    monkeypatch.setenv("CXX", "no-such-c++")
    compiled, why = resolve_torch_compile("auto", "cpu")
    assert not compiled and "no C++ compiler 'no-such-c++'" in why and "on PATH" in why
    # Asked for where inductor cannot build kernels: refused before the model loads, naming the key.
    with pytest.raises(FtcompareError, match=r"^training.torch_compile: true, but no C\+\+ compiler 'no-such-c\+\+'"):
        resolve_torch_compile(True, "cpu")
    assert resolve_torch_compile(False, "cpu") == (False, "off in the config")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    compiled, why = resolve_torch_compile("auto", "cuda")
    assert not compiled and "Triton" in why
    with pytest.raises(FtcompareError, match="Triton"):
        resolve_torch_compile(True, "cuda")


def test_options_report_what_was_on(default_config, blog_config):
    from ftcompare.config import run_settings

    def options(training):
        return training_options(training, resolve_speed_options(training, "cpu"))

    blog = options(run_settings(blog_config, "lora")["training"])
    assert blog["packing"] is False and blog["bf16"] is False and blog["optim"] == "paged_adamw_32bit"
    assert blog["packed_layout"] is None
    assert blog["torch_compile"] is False and blog["torch_compile_setting"] is False
    ours = options(run_settings(default_config, "lora")["training"])
    assert ours["bf16"] is False and ours["bf16_setting"] == "auto"
    assert ours["torch_compile"] is False and ours["torch_compile_setting"] is False
    auto = options({**run_settings(default_config, "lora")["training"], "torch_compile": "auto"})
    assert auto["torch_compile"] is resolve_torch_compile("auto", "cpu")[0] and auto["torch_compile_setting"] == "auto"
    assert packed_layout({"packing": True, "attn_implementation": "sdpa"}) == "rows"
