"""The embedded base model's text: the documentation of the installed Python that it is pretrained on, and
documentation of the same kind that pretraining never sees (the embedded source set, on which forgetting is
measured). Plain Python, no torch: the job that prepares the source set needs nothing else."""

import importlib
import inspect
import re
import warnings

# Modules whose module and class docstrings are the pretraining prose. Pure-Python or always
# built-in on every platform CPython supports; none prints, opens windows or warns on import.
PRETRAINING_MODULES = tuple(
    sorted(
        """
    abc argparse ast asyncio base64 bdb binascii bisect bz2 calendar cmd code codecs collections
    colorsys concurrent.futures configparser contextlib copy csv dataclasses datetime decimal
    difflib dis doctest email email.message enum filecmp fileinput fnmatch fractions ftplib
    functools getopt getpass gettext glob graphlib gzip hashlib heapq hmac html html.parser
    http.client http.cookiejar http.server imaplib importlib inspect io ipaddress itertools json
    json.decoder logging logging.handlers lzma mailbox mimetypes numbers operator optparse os
    pathlib pdb pickle pickletools pkgutil platform plistlib poplib pprint profile pstats queue
    quopri random re reprlib sched secrets selectors shelve shlex shutil signal smtplib socket
    socketserver statistics string struct subprocess symtable sysconfig tabnanny tarfile tempfile
    textwrap threading timeit tokenize trace traceback tracemalloc types typing unittest
    unittest.mock urllib.parse urllib.request uuid warnings wave weakref xml.dom.minidom
    xml.etree.ElementTree zipapp zipfile zoneinfo
""".split()
    )
)
# Modules whose docs pretraining never sees: the embedded source set (held_out_pretraining_texts), the
# text on which forgetting is measured. None of them is in the fine-tuning data (embedded_data.STDLIB_MODULES),
# so fine-tuning cannot teach them either.
HELD_OUT_MODULES = ("doctest", "http.server", "pdb", "shelve", "socketserver", "subprocess", "unittest.mock")
MIN_HELD_OUT_WORDS = 8


def pretraining_texts() -> list[str]:
    """Plain prose from the installed Python: module and class docstrings, then the language reference.

    The language reference topics are the text behind `help("assert")` (pydoc_data). No chat
    markup: the fine-tuning set (function docstrings as Llama-2 chat) is the same domain, new form.
    """
    texts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated aliases (typing.io) warn when touched
        texts.extend(
            _module_docstrings(
                module_name for module_name in PRETRAINING_MODULES if module_name not in HELD_OUT_MODULES
            )
        )
    try:
        from pydoc_data.topics import topics
    except ImportError:
        topics = {}
    texts.extend(topics[key].strip() for key in sorted(topics) if topics[key].strip())
    return texts


def held_out_pretraining_texts() -> list[str]:
    """Text of the pretraining's kind that pretraining never sees: the paragraphs of HELD_OUT_MODULES'
    module and class docstrings, in a fixed order, each of at least MIN_HELD_OUT_WORDS words.

    Paragraphs rather than whole docstrings, so that evaluation truncating to max_seq_length keeps most of it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        docs = _module_docstrings(HELD_OUT_MODULES)
    paragraphs = (part.strip() for doc in docs for part in re.split(r"\n\s*\n", doc))
    return list(dict.fromkeys(p for p in paragraphs if len(p.split()) >= MIN_HELD_OUT_WORDS))


def _module_docstrings(module_names) -> list[str]:
    texts = []
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a stripped-down Python build; the text is then smaller, still fixed
            continue
        texts.extend(_docstrings_of(module))
    return texts


def _docstrings_of(module) -> list[str]:
    docs = [inspect.getdoc(module)]
    for name, value in sorted(vars(module).items()):
        # The class's own docstring only: inspect.getdoc would repeat a base class's for each subclass.
        if (
            inspect.isclass(value)
            and not name.startswith("_")
            and value.__module__ == module.__name__
            and isinstance(value.__doc__, str)
        ):
            docs.append(inspect.cleandoc(value.__doc__))
    return [doc for doc in docs if doc and doc.strip()]
