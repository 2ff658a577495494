"""Strict JSON: what Python's json module accepts beyond the standard (NaN, Infinity, -Infinity)
refused, and every JSON and JSON Lines file under a folder read that way."""

import json
from pathlib import Path


def _refuse(constant: str):
    raise ValueError(f"{constant} is not JSON")


def loads_strict(text: str):
    """json.loads, but NaN, Infinity and -Infinity raise ValueError."""
    return json.loads(text, parse_constant=_refuse)


def strict_json_problems(root: Path) -> tuple[list[str], int]:
    """(what is not strict JSON, how many documents were read) over every *.json file and every line
    of every *.jsonl file under `root`."""
    problems, documents = [], 0
    for path in sorted(Path(root).rglob("*.json")):
        documents += 1
        try:
            loads_strict(path.read_text(encoding="utf-8"))
        except ValueError as error:
            problems.append(f"{path.relative_to(root)}: {error}")
    for path in sorted(Path(root).rglob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            documents += 1
            try:
                loads_strict(line)
            except ValueError as error:
                problems.append(f"{path.relative_to(root)}:{number}: {error}")
    return problems, documents
