"""The embedded instruction data set: questions about Python's standard library, answered by its docstrings.

It needs no network and has exactly the guanaco-llama2 schema: one string per row,
`<s>[INST] {question} [/INST] {answer} </s>` (the Llama-2 chat format). The rows depend only on the
seed and on the Python version (docstrings change between releases), so data cards record that version.
"""

import importlib
import inspect
import random
import re
import sys

from ftcompare.errors import FtcompareError

# Modules that exist on 3.11 and later, mostly pure Python, whose public names do not depend on the
# platform (modules such as os, locale or selectors, which define some names only on some systems,
# are left out). Sorted; the order feeds the seeded sample.
STDLIB_MODULES = (
    "abc",
    "argparse",
    "ast",
    "base64",
    "bisect",
    "calendar",
    "cmd",
    "code",
    "codecs",
    "collections",
    "collections.abc",
    "colorsys",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "email.headerregistry",
    "email.message",
    "email.parser",
    "email.policy",
    "email.utils",
    "enum",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "graphlib",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "http.client",
    "http.cookiejar",
    "http.cookies",
    "imaplib",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "keyword",
    "linecache",
    "logging",
    "logging.handlers",
    "mailbox",
    "math",
    "mimetypes",
    "netrc",
    "numbers",
    "operator",
    "optparse",
    "pathlib",
    "pickle",
    "pkgutil",
    "plistlib",
    "poplib",
    "pprint",
    "queue",
    "quopri",
    "random",
    "re",
    "reprlib",
    "sched",
    "secrets",
    "shlex",
    "smtplib",
    "statistics",
    "string",
    "stringprep",
    "struct",
    "symtable",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "tomllib",
    "trace",
    "traceback",
    "types",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "urllib.robotparser",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "wsgiref.util",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "xml.sax.saxutils",
    "zipapp",
    "zipfile",
    "zipimport",
    "zoneinfo",
)

FUNCTION_QUESTIONS = (
    "What does `{name}` do in Python?",
    "How do I use `{name}` in Python?",
    "Explain the Python function `{name}`.",
    "What is `{name}` for?",
    "Can you describe what `{name}` from Python's standard library does?",
)
CLASS_QUESTIONS = (
    "What is the `{name}` class in Python?",
    "What is `{name}` used for in Python?",
    "Explain the Python class `{name}`.",
    "Can you describe the `{name}` type from Python's standard library?",
)
MODULE_QUESTIONS = (
    "What is the Python module `{name}` for?",
    "What does the `{name}` module in Python's standard library provide?",
    "Explain what Python's `{name}` module is.",
)
QUESTIONS_BY_KIND = {"function": FUNCTION_QUESTIONS, "class": CLASS_QUESTIONS, "module": MODULE_QUESTIONS}

MAX_ANSWER_CHARS = 600
MIN_ANSWER_WORDS = 5
CHAT_MARKERS = ("<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")
_SIGNATURE_LINE = re.compile(r"^[\w.]+\(.*\)(\s*->\s*.+)?$")
_TABLE_ROW = re.compile(r"\S {3,}\S")


def build_embedded_texts(n_rows: int, seed: int) -> list[str]:
    """`n_rows` distinct rows in the guanaco-llama2 format, chosen and phrased by `seed`."""
    entries = documented_entries()
    if n_rows > len(entries):
        raise FtcompareError(
            f"data.embedded_rows = {n_rows}: the embedded data set has only {len(entries)} rows on Python "
            f"{python_version()}"
            + (
                " (docstrings are stripped: Python runs with -OO or PYTHONOPTIMIZE=2)"
                if sys.flags.optimize >= 2
                else ""
            )
            + f"; use at most {len(entries)} or another data set (data.name)"
        )
    rng = random.Random(seed)
    chosen = rng.sample(entries, n_rows)
    rows = []
    for kind, name, answer in chosen:
        question = rng.choice(QUESTIONS_BY_KIND[kind]).format(name=name)
        rows.append(format_chat_row(question, answer))
    return rows


def format_chat_row(question: str, answer: str) -> str:
    return f"<s>[INST] {question} [/INST] {answer} </s>"


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def documented_entries() -> list[tuple[str, str, str]]:
    """(kind, qualified name, answer) for every documented public module, class, function and method.

    In a fixed order (modules as listed, names sorted within each); a name or an answer seen before
    is skipped (aliases and shared docstrings). Methods (kind "function") are the ones a class defines.
    """
    entries = []
    seen_names: set[str] = set()
    seen_answers: set[str] = set()

    def add(kind: str, name: str, obj) -> None:
        answer = clean_docstring(getattr(obj, "__doc__", None), name.rsplit(".", 1)[-1])
        if answer is None or name in seen_names or answer in seen_answers:
            return
        seen_names.add(name)
        seen_answers.add(answer)
        entries.append((kind, name, answer))

    for module_name in STDLIB_MODULES:
        module = importlib.import_module(module_name)
        add("module", module_name, module)
        for attr, obj in _public_members(module):
            name = f"{module_name}.{attr}"
            if inspect.isclass(obj):
                if obj.__module__ == "builtins":
                    continue  # an alias such as typing.Text (str): its methods are not this module's API
                add("class", name, obj)
                for method_name, method in _public_methods(obj):
                    add("function", f"{name}.{method_name}", method)
            elif callable(obj):
                add("function", name, obj)
    return entries


def clean_docstring(doc, short_name: str) -> str | None:
    """The first paragraph or two of `doc` as one line of prose, at most MAX_ANSWER_CHARS; None if unusable."""
    if not isinstance(doc, str):
        return None
    paragraphs = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(doc)):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines:
            continue
        # Examples, tables, parameter lists and headings read badly as one line: stop before them.
        if (
            re.fullmatch(r"\w+", lines[0])
            or lines[0].endswith("::")
            or lines[0].startswith(("..", ":", "-", "*", "|", "+", "="))
        ):
            break
        cut = next((i for i, line in enumerate(lines) if line.startswith(">>>") or _TABLE_ROW.search(line)), None)
        lines = lines[:cut]
        if not lines:
            break
        if not paragraphs and _SIGNATURE_LINE.match(lines[0]) and lines[0].startswith(short_name):
            lines = lines[1:]  # a C function's docstring may open with its signature
            if not lines:
                continue
        paragraphs.append(" ".join(lines))
        if len(paragraphs) == 2 or cut is not None or sum(map(len, paragraphs)) > MAX_ANSWER_CHARS // 2:
            break
    answer = re.sub(r"\s+", " ", " ".join(paragraphs)).strip()
    if answer.endswith(":"):  # it introduced an example or a list that was left out
        sentence_end = answer.rfind(". ")
        answer = answer[: sentence_end + 1] if sentence_end > 0 else answer[:-1].rstrip() + "."
    if len(answer.split()) < MIN_ANSWER_WORDS or any(marker in answer for marker in CHAT_MARKERS):
        return None
    return _shorten(answer, MAX_ANSWER_CHARS)


def _shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters: at the end of a sentence, else of a word, marked with ' ...'."""
    if len(text) <= limit:
        return text
    sentence_end = text[:limit].rfind(". ")
    if sentence_end >= limit // 3:
        return text[: sentence_end + 1]
    cut = text[: limit - len(" ...")]
    return cut[: cut.rfind(" ")].rstrip(",;:") + " ..."


def _public_members(module) -> list[tuple[str, object]]:
    """The module's public API: its `__all__`, else the public names it defines itself."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name, obj in vars(module).items() if getattr(obj, "__module__", None) == module.__name__]
    members = []
    for name in sorted(set(names)):
        obj = getattr(module, name, None)
        if not name.startswith("_") and obj is not None and not inspect.ismodule(obj):
            members.append((name, obj))
    return members


def _public_methods(cls) -> list[tuple[str, object]]:
    """Public methods and properties the class itself defines (not inherited ones, whose docs repeat)."""
    methods = []
    for name, raw in sorted(vars(cls).items()):
        if name.startswith("_"):
            continue
        if isinstance(raw, (classmethod, staticmethod)):
            raw = raw.__func__
        if (
            callable(raw)
            or isinstance(raw, property)
            or inspect.ismethoddescriptor(raw)
            or inspect.isdatadescriptor(raw)
        ):
            methods.append((name, raw))
    return methods
