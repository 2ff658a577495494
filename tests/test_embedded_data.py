"""The embedded data set: guanaco-llama2 format, built from the standard library's docstrings."""

import importlib
import re
import time

import pytest

from ftcompare import embedded_data
from ftcompare.embedded_data import (
    CHAT_MARKERS,
    MAX_ANSWER_CHARS,
    QUESTIONS_BY_KIND,
    STDLIB_MODULES,
    build_embedded_texts,
    clean_docstring,
    documented_entries,
    format_chat_row,
)
from ftcompare.errors import FtcompareError

ROW = re.compile(r"<s>\[INST\] (?P<question>\S.*?\S) \[/INST\] (?P<answer>\S.*\S) </s>", re.DOTALL)


@pytest.fixture(scope="module")
def rows_2000():
    return build_embedded_texts(2000, seed=42)


def parse(row: str) -> tuple[str, str]:
    match = ROW.fullmatch(row)
    assert match, f"not in the guanaco-llama2 format: {row!r}"
    return match["question"], match["answer"]


def test_every_row_has_the_guanaco_llama2_format(rows_2000):
    for row in rows_2000:
        question, answer = parse(row)
        assert "\n" not in row
        assert row.count("<s>") == row.count("</s>") == row.count("[INST]") == row.count("[/INST]") == 1
        for marker in CHAT_MARKERS:
            assert marker not in question and marker not in answer
        assert len(answer) <= MAX_ANSWER_CHARS
        assert len(answer.split()) >= embedded_data.MIN_ANSWER_WORDS


def test_format_matches_the_blog_data_set():
    assert format_chat_row("What is 2+2?", "4, of course.") == "<s>[INST] What is 2+2? [/INST] 4, of course. </s>"


def test_questions_come_from_the_templates_and_name_a_documented_object(rows_2000):
    names = {name for _, name, _ in documented_entries()}
    templates = [
        re.escape(t).replace(re.escape("{name}"), "(?P<name>[^`]+)") for ts in QUESTIONS_BY_KIND.values() for t in ts
    ]
    for row in rows_2000[:300]:
        question, _ = parse(row)
        match = next((m for t in templates if (m := re.fullmatch(t, question))), None)
        assert match, question
        assert match["name"] in names


def test_answers_are_the_docstrings_of_the_named_objects():
    entries = {name: (kind, answer) for kind, name, answer in documented_entries()}
    assert entries["textwrap.dedent"][0] == "function"
    assert entries["textwrap.dedent"][1].startswith("Remove any common leading whitespace from every line")
    assert entries["json"][0] == "module"
    assert entries["json"][1].startswith("JSON (JavaScript Object Notation)")
    assert entries["fractions.Fraction"][0] == "class"
    assert "rational" in entries["fractions.Fraction"][1].lower()
    assert entries["collections.Counter.most_common"][0] == "function"  # a method the class defines


def test_no_private_names_and_no_aliases_of_builtins():
    for _, name, _ in documented_entries():
        assert not any(part.startswith("_") for part in name.split(".")), name
    names = {name for _, name, _ in documented_entries()}
    assert "typing.Text.join" not in names  # typing.Text is str: its methods are not typing's


def test_same_seed_same_rows_other_seed_other_order_and_phrasing(rows_2000):
    assert build_embedded_texts(2000, seed=42) == rows_2000
    other = build_embedded_texts(2000, seed=7)
    assert other != rows_2000
    assert other[:50] != rows_2000[:50]

    def question_by_name(rows):
        found = {}
        for row in rows:
            question, _ = parse(row)
            found[re.search(r"`([^`]+)`", question)[1]] = question
        return found

    first, second = question_by_name(rows_2000), question_by_name(other)
    shared = first.keys() & second.keys()
    assert len(shared) > 500
    assert sum(first[name] != second[name] for name in shared) > len(shared) // 4


def test_rows_are_distinct_and_counted(rows_2000):
    assert len(rows_2000) == 2000
    assert len(set(rows_2000)) == 2000
    assert len({parse(row)[0] for row in rows_2000}) == 2000
    for n_rows in (1, 10, 1100):
        assert len(build_embedded_texts(n_rows, seed=3)) == n_rows
    assert build_embedded_texts(10, seed=3) != build_embedded_texts(10, seed=4)


def test_too_many_rows_is_a_clear_error():
    available = len(documented_entries())
    assert available >= 2200  # headroom over the ~2000 rows the config allows for
    with pytest.raises(FtcompareError, match=rf"data.embedded_rows = {available + 1}: .*only {available} rows"):
        build_embedded_texts(available + 1, seed=0)


def test_it_is_fast():
    start = time.perf_counter()
    build_embedded_texts(2000, seed=1)
    assert time.perf_counter() - start < 2.0


def test_module_list_is_sorted_unique_and_importable():
    assert list(STDLIB_MODULES) == sorted(set(STDLIB_MODULES))
    for name in STDLIB_MODULES:
        importlib.import_module(name)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("Return the thing.\n\n    More about the thing.\n", "Return the thing. More about the thing."),
        (
            "Split the text into\n    lines of at most width characters.",
            "Split the text into lines of at most width characters.",
        ),
        ("frob(x, y) -> int\n\nCombine x and y into one number.", "Combine x and y into one number."),
        ("Parse the data and return it.\n\n>>> parse('a')\n'a'\n", "Parse the data and return it."),
        ("Count the items in a list of things. Example:\n>>> count([1])\n1", "Count the items in a list of things."),
        (
            "Describe all the attributes here.\nname      the name of it\nsize      its size",
            "Describe all the attributes here.",
        ),
        (
            "Frobnicate the widget very thoroughly.\n\nParameters\n----------\nx : int",
            "Frobnicate the widget very thoroughly.",
        ),
        ("Frobnicate the widget very thoroughly.\n\nwidget\n  The widget.", "Frobnicate the widget very thoroughly."),
    ],
)
def test_clean_docstring_keeps_the_prose(doc, expected):
    assert clean_docstring(doc, "frob") == expected


@pytest.mark.parametrize("doc", [None, "", "Return self.", "Wrap it in <s>[INST] markers [/INST] like a chat.", 42])
def test_clean_docstring_refuses_unusable_docs(doc):
    assert clean_docstring(doc, "frob") is None


def test_clean_docstring_caps_long_answers():
    sentence = "This sentence is about the function and what it does. "
    answer = clean_docstring(sentence * 40, "frob")
    assert len(answer) <= MAX_ANSWER_CHARS
    assert answer.endswith("does.")
    one_long_sentence = "word " * 400
    answer = clean_docstring(one_long_sentence, "frob")
    assert len(answer) <= MAX_ANSWER_CHARS and answer.endswith(" ...")
