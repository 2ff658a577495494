"""The prompts file: what the generate job reads and the config check refuses, one reader for both."""

import pytest

from ftcompare.errors import FtcompareError
from ftcompare.prompts import EXPECTED, PromptsError, load_prompts

# (the file's bytes, why it is refused: PromptsError.reason up to the `; expected ...` that says what is allowed)
BAD_PROMPTS = [
    (b"prompts: [a, b\n", "not valid YAML (line 2, column 1: expected ',' or ']', but got '<stream end>')"),
    (b"", "holds nothing (null), not a mapping"),
    (b"- a\n- b\n", "holds a list, not a mapping"),
    (b"questions:\n  - a\n", "has no `prompts:` key"),
    (b"prompts: one question\n", "`prompts` holds a string, not a list"),
    (b"prompts:\n", "`prompts` holds nothing (null), not a list"),
    (b"prompts: []\n", "`prompts` is an empty list"),
    (b"prompts:\n  - a\n  - 2\n", "prompt 2 is an integer, not a string"),
    (b"prompts:\n  - a\n  - {q: b}\n", "prompt 2 is a mapping, not a string"),
    (b"prompts:\n  - a\n  - '  '\n", "prompt 2 is empty"),
    (b"prompts:\n  - a\n  - 2024-01-01\n", "prompt 2 is a date, not a string"),
    (b"prompts:\n  - ''\n", "prompt 1 is empty"),
]


def test_prompts_are_read_in_order_and_stripped(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("# a comment\ntitle: extra keys are allowed\nprompts:\n  - ' one '\n  - two\n")
    assert load_prompts(path) == ["one", "two"]


@pytest.mark.parametrize("content, reason", BAD_PROMPTS, ids=[reason for _, reason in BAD_PROMPTS])
def test_a_bad_prompts_file_says_why_in_one_line(tmp_path, content, reason):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(PromptsError) as caught:
        load_prompts(path)
    assert caught.value.reason == f"{reason}; {EXPECTED}" and "\n" not in caught.value.reason
    assert str(caught.value) == f"prompts file {path}: {caught.value.reason}"
    assert isinstance(caught.value, FtcompareError)  # the job's scripts report it as a user error


def test_an_unreadable_prompts_file(tmp_path):
    with pytest.raises(PromptsError, match="cannot be read \\(FileNotFoundError"):
        load_prompts(tmp_path / "missing.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("prompts:\n  - caf\u00e9\n".encode("latin-1"))
    with pytest.raises(PromptsError, match="cannot be read \\(UnicodeDecodeError"):
        load_prompts(latin1)
