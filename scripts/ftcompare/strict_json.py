"""Strict JSON: what every file the workflow writes holds, and how the report reads it back.

Python's json writes NaN and Infinity, which are not JSON; a value that cannot be given is null.
"""

import json
import math
from pathlib import Path

from ftcompare.errors import FtcompareError


def dumps(obj, **kwargs) -> str:
    """json.dumps with every non-finite float (NaN, ±Infinity) written as null."""
    return json.dumps(_finite(obj), allow_nan=False, default=_json_default, **kwargs)


def loads(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity."""
    return json.loads(text, parse_constant=_refuse_constant)


def read_json_object(path: Path) -> dict:
    """A JSON object from `path` (null reads as {}); a short FtcompareError naming the file otherwise."""
    try:
        value = loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise FtcompareError(f"{path}: cannot read: {error.strerror or error}") from error
    except ValueError as error:
        raise FtcompareError(f"{path}: not valid JSON ({getattr(error, 'msg', error)})") from error
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FtcompareError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _json_default(value):
    if hasattr(value, "item"):  # numpy and torch scalars
        return _finite(value.item())
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
