"""The run record: metrics.json written by training and read by the report, with one perplexity."""

import json
import math

import pytest

from ftcompare.errors import FtcompareError
from ftcompare.metrics import MemoryFigure, RunMetrics, perplexity, read_metrics, write_metrics
from ftcompare.strict_json import loads


def test_perplexity_is_exp_of_the_loss_and_null_where_that_overflows():
    assert perplexity(1.0) == pytest.approx(math.e)
    assert perplexity(700.0) == pytest.approx(math.exp(700.0))
    assert perplexity(710.0) is None
    assert perplexity(None) is None
    assert perplexity(float("nan")) is None


def record(**overrides) -> RunMetrics:
    values = {
        "run": "lora",
        "method": "lora",
        "trainable_params": 2048,
        "total_params": 48288,
        "train_steps": 6,
        "eval_loss": 2.0,
        "eval_loss_before_training": 2.5,
        "throughput_skipped_steps": 1,
        "options": {"packing": False},
        "lora": {"r": 8},
        "memory": {"rss_mb": MemoryFigure(562.1, "MiB", "process RSS")},
        "versions": {"torch": "2.13.0"},
    }
    return RunMetrics(**{**values, **overrides})


def test_a_written_record_reads_back_equal_with_its_derived_figures_beside_their_source(tmp_path):
    path = tmp_path / "metrics.json"
    metrics = record()
    write_metrics(path, metrics)
    raw = loads(path.read_text())
    keys = list(raw)
    assert keys.index("trainable_pct") == keys.index("total_params") + 1
    assert keys.index("eval_perplexity") == keys.index("eval_loss") + 1
    assert raw["trainable_pct"] == pytest.approx(100 * 2048 / 48288)
    assert raw["eval_perplexity"] == pytest.approx(math.exp(2.0))
    assert raw["eval_perplexity_before_training"] == pytest.approx(math.exp(2.5))
    assert raw["memory"] == {"rss_mb": {"value": 562.1, "unit": "MiB", "source": "process RSS"}}
    assert read_metrics(path, "lora") == metrics


def test_a_loss_that_overflowed_is_null_in_the_file_not_infinity(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, record(eval_loss=float("inf"), final_train_loss=float("nan")))
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    raw = json.loads(text)
    assert raw["eval_loss"] is None and raw["eval_perplexity"] is None and raw["final_train_loss"] is None


def test_values_of_the_wrong_type_read_as_missing():
    metrics = RunMetrics.from_json(
        {"run": "full", "train_steps": "six", "eval_loss": True, "options": [1], "memory": {"rss_mb": 5}},
        fallback_run="x",
    )
    assert metrics.train_steps is None and metrics.eval_loss is None
    assert metrics.options == {} and metrics.memory == {}
    assert RunMetrics.from_json({}, fallback_run="x").run == "x"


def test_a_record_of_another_run_is_refused(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, record(run="full"))
    with pytest.raises(FtcompareError, match="is for run 'full', expected 'lora'"):
        read_metrics(path, "lora")
