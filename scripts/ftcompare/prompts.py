"""The prompts file (generation.prompts): a YAML mapping whose `prompts:` key holds a non-empty list
of non-empty strings. Read the same way by the config check (before any job) and the generate job.

Kept free of torch and transformers imports: ftcompare.config calls it on every Snakemake start.
"""

from pathlib import Path

import yaml

from ftcompare.errors import FtcompareError

EXPECTED = "expected a `prompts:` list of non-empty strings, like config/prompts.yaml"


class PromptsError(FtcompareError):
    """A prompts file that cannot be used; `reason` says why, in one line, without the file's name."""

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"prompts file {path}: {reason}")


def load_prompts(path) -> list[str]:
    """The prompts of the file at `path`, each stripped of surrounding whitespace, in file order."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise PromptsError(path, f"not valid YAML ({_yaml_problem(error)}); {EXPECTED}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise PromptsError(path, f"cannot be read ({type(error).__name__}: {error})") from error
    if not isinstance(document, dict):
        raise PromptsError(path, f"holds {_kind(document)}, not a mapping; {EXPECTED}")
    if "prompts" not in document:
        raise PromptsError(path, f"has no `prompts:` key; {EXPECTED}")
    prompts = document["prompts"]
    if not isinstance(prompts, list):
        raise PromptsError(path, f"`prompts` holds {_kind(prompts)}, not a list; {EXPECTED}")
    if not prompts:
        raise PromptsError(path, f"`prompts` is an empty list; {EXPECTED}")
    for number, prompt in enumerate(prompts, start=1):
        if not isinstance(prompt, str):
            raise PromptsError(path, f"prompt {number} is {_kind(prompt)}, not a string; {EXPECTED}")
        if not prompt.strip():
            raise PromptsError(path, f"prompt {number} is empty; {EXPECTED}")
    return [prompt.strip() for prompt in prompts]


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}


def _kind(value) -> str:
    """What a YAML value is, in YAML's words: "a string", "a mapping", "nothing (null)"."""
    if value is None:
        return "nothing (null)"
    return _KINDS.get(type(value), f"a {type(value).__name__}")


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what, in one line: "line 3, column 1: expected ',' or ']', but got '<stream end>'"."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
