"""Strict JSON: non-finite numbers are written as null and refused when read."""

import json
import math

import numpy as np
import pytest

from ftcompare.atomic import write_json
from ftcompare.errors import FtcompareError
from ftcompare.strict_json import dumps, loads, read_json_object


def test_non_finite_numbers_are_written_as_null_at_any_depth():
    value = {"a": math.inf, "b": [1.5, -math.inf, {"c": math.nan}], "d": (np.float64("nan"), np.int64(3))}
    assert json.loads(dumps(value)) == {"a": None, "b": [1.5, None, {"c": None}], "d": [None, 3]}


def test_write_json_gives_a_file_a_strict_parser_reads(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"loss": float("inf"), "path": tmp_path})
    assert loads(path.read_text()) == {"loss": None, "path": str(tmp_path)}


@pytest.mark.parametrize("text", ['{"x": NaN}', '{"x": Infinity}', "[-Infinity]"])
def test_loads_refuses_what_is_not_json(text):
    with pytest.raises(ValueError, match="is not JSON"):
        loads(text)


def test_read_json_object_names_the_file_and_the_problem(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"eval_loss": NaN}')
    with pytest.raises(FtcompareError, match=r"metrics.json: not valid JSON \(NaN is not JSON\)"):
        read_json_object(path)
    path.write_text("[1, 2]")
    with pytest.raises(FtcompareError, match="expected a JSON object, found list"):
        read_json_object(path)
    path.write_text("null")
    assert read_json_object(path) == {}
