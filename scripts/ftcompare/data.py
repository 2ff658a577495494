"""The data stage: load the instruction data from its source, check it, split it and describe it.

One code path serves every source: `embedded` (ftcompare.embedded_data), a local file (.json, .jsonl,
.csv, .parquet), a local folder (data files, a hub-style data set folder, or a `save_to_disk` folder)
and a Hugging Face hub id. The outputs are train.parquet and eval.parquet (one column, `text`) and
data_card.json, which says where the rows came from and how long they are in tokens.
"""

import csv
import dataclasses
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftcompare.atomic import atomic_path, write_json
from ftcompare.embedded_data import build_embedded_texts, python_version
from ftcompare.errors import FtcompareError

log = logging.getLogger("ftcompare.data")

EMBEDDED = "embedded"
FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
# Text files datasets.load_dataset reads from a folder; checked for UTF-8 first, since invalid bytes
# would otherwise load silently and fail later, far from the file that holds them.
FOLDER_TEXT_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".txt")
SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")
OUTPUT_COLUMN = "text"
TOKENIZE_BATCH_SIZE = 1000

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_HUB_TOKEN = re.compile(r"hf_[A-Za-z0-9]{8,}")
_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
_MISSING = object()  # a record without the text field
_USE_INSTEAD = (
    "use a local file (.json, .jsonl, .csv, .parquet) or folder, or `data.name: embedded` (the offline default)"
)


class DataError(FtcompareError):
    """The data set cannot be used as it is: missing, unreadable, or not text."""


@dataclass(frozen=True)
class DataSpec:
    """What to load and how to split it: the `data` section plus the seed and max_seq_length."""

    name: str
    revision: str | None
    split: str
    text_column: str
    eval_fraction: float
    max_rows: int | None
    embedded_rows: int | None  # only used (and only passed by the rule) for `embedded`
    seed: int
    max_seq_length: int
    eval_source: "DataSpec | None" = None  # held-out rows from a source of their own (then nothing is split off)
    key: str = "data"  # the config section this spec came from, for messages
    subset: str | None = None  # a hub data set's configuration (datasets' `name`, e.g. wikitext-2-raw-v1)

    @classmethod
    def from_section(cls, data: dict, seed: int, max_seq_length: int) -> "DataSpec":
        """From the validated `data` section and the two keys outside it (what the rule passes as params).

        The rule leaves out `embedded_rows` when the source is not `embedded`, and `eval_source` when it
        names none, so that changing them reruns nothing then.
        """
        spec = cls(
            name=data["name"],
            revision=data["revision"],
            split=data["split"],
            text_column=data["text_column"],
            eval_fraction=data["eval_fraction"],
            max_rows=data["max_rows"],
            embedded_rows=data.get("embedded_rows"),
            seed=seed,
            max_seq_length=max_seq_length,
        )
        source = data.get("eval_source")
        if source is None or source["name"] is None:
            return spec
        held_out = dataclasses.replace(
            spec,
            name=source["name"],
            revision=source["revision"],
            split=source["split"],
            max_rows=source["max_rows"],
            key="data.eval_source",
        )
        return dataclasses.replace(spec, eval_source=held_out)


@dataclass
class LoadedData:
    """The text column as loaded (every row a string, empty ones included) and where it came from."""

    texts: list[str]
    source: str  # embedded | local_file | local_folder | hub
    revision: str | None
    dropped_empty: int = 0


def source_kind(name: str, key: str = "data") -> str:
    """embedded, local_file, local_folder or hub; a path that does not exist is refused here.

    An existing file or folder wins over a hub id of the same spelling (`./embedded` names a folder).
    """
    if name == EMBEDDED:
        return EMBEDDED
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise DataError(
                f"{key}.name = {name!r}: unsupported file type {path.suffix or '(none)'!r}; "
                f"allowed: {', '.join(FILE_SUFFIXES)}, or a folder"
            )
        return "local_file"
    if path.is_dir():
        return "local_folder"
    if _looks_like_path(name):
        raise DataError(f"{key}.name = {name!r}: no such file or folder ({path.resolve()})")
    if _HUB_ID.match(name):
        return "hub"
    raise DataError(
        f"{key}.name = {name!r}: not `embedded`, not an existing file or folder, and not a "
        f"Hugging Face hub id (owner/name)"
    )


def load_texts(spec: DataSpec) -> LoadedData:
    """Load the text column from the spec's source and check that every row is a string."""
    kind = source_kind(spec.name, spec.key)
    if spec.revision is not None and kind != "hub":
        log.warning("%s.revision = %r is ignored: it applies to hub data sets only", spec.key, spec.revision)
    revision = None
    if kind == EMBEDDED:
        where = "the embedded data set"
        if spec.embedded_rows is None:
            raise DataError("data.embedded_rows is needed when data.name is `embedded`")
        texts = build_embedded_texts(spec.embedded_rows, spec.seed)
        columns, values = [OUTPUT_COLUMN], (texts if spec.text_column == OUTPUT_COLUMN else None)
    elif kind == "local_file":
        path = Path(spec.name).expanduser()
        where = str(path)
        columns, values = read_data_file(path, spec.text_column)
    elif kind == "local_folder":
        path = Path(spec.name).expanduser()
        where = str(path)
        columns, values = _dataset_column(read_data_folder(path, spec.split, spec.key), spec.text_column, where)
    else:
        where = f"hub data set {spec.name!r} (split {spec.split!r})"
        dataset = load_hub_dataset(spec.name, spec.revision, spec.split, spec.key, spec.subset)
        revision = resolved_hub_revision(dataset, spec.revision)
        columns, values = _dataset_column(dataset, spec.text_column, where)
    texts = check_text_rows(columns, values, spec.text_column, where)
    log.info("loaded %d rows from %s (source %s)", len(texts), where, kind)
    return LoadedData(texts=texts, source=kind, revision=revision)


def check_text_rows(columns: list[str], values: list | None, text_column: str, where: str) -> list[str]:
    """`values` if it is a non-empty list of strings, else a DataError naming the problem."""
    if values is None:
        if not columns:
            raise DataError(f"{where} has no rows")
        raise DataError(
            f"{where} has no column {text_column!r} (data.text_column); its columns: {', '.join(map(str, columns))}"
        )
    if not values:
        raise DataError(f"{where} has no rows")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise DataError(
                f"{where}: row index {index}: column {text_column!r} holds {_describe_value(value)}, not a string"
            )
    return values


def drop_empty_rows(texts: list[str]) -> tuple[list[str], int]:
    """The rows with some non-whitespace text, and how many were dropped."""
    kept = [text for text in texts if text.strip()]
    return kept, len(texts) - len(kept)


def split_texts(texts: list[str], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, eval): round(n * eval_fraction) rows, at least one, go to eval; each keeps the input order.

    The eval rows are picked by a hash of seed and row index rather than by `random`, whose
    shuffles may change between Python versions; the split is the same wherever it runs.
    """
    n_rows = len(texts)
    n_eval = max(1, round(n_rows * eval_fraction))
    if n_eval >= n_rows:
        raise DataError(
            f"{n_rows} row{'s' if n_rows != 1 else ''} cannot be split into train and eval with "
            f"data.eval_fraction = {eval_fraction}: each needs at least one row; "
            f"use more rows (data.max_rows, data.embedded_rows) or a smaller eval_fraction"
        )
    ranked = sorted(range(n_rows), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    eval_rows = set(ranked[:n_eval])
    train = [text for i, text in enumerate(texts) if i not in eval_rows]
    evaluation = [text for i, text in enumerate(texts) if i in eval_rows]
    return train, evaluation


def fingerprint(*text_lists: list[str]) -> str:
    """sha256 (hex) of lists of texts in order: each list's row count, then each text's UTF-8 bytes
    preceded by their length (8 bytes, big-endian), so no two different lists share a fingerprint."""
    digest = hashlib.sha256()
    for texts in text_lists:
        digest.update(len(texts).to_bytes(8, "big"))
        for text in texts:
            data = text.encode("utf-8")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return digest.hexdigest()


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text as training counts them: the tokenizer's default special tokens, no truncation."""
    lengths = []
    for start in range(0, len(texts), TOKENIZE_BATCH_SIZE):
        encoded = tokenizer(
            texts[start : start + TOKENIZE_BATCH_SIZE], add_special_tokens=True, truncation=False, verbose=False
        )
        lengths.extend(len(ids) for ids in encoded["input_ids"])
    return lengths


def length_stats(lengths: list[int]) -> dict:
    values = np.asarray(lengths, dtype=float)
    return {
        "min": int(values.min()),
        "mean": round(float(values.mean()), 2),
        "median": round(float(np.median(values)), 2),
        "p95": round(float(np.percentile(values, 95)), 2),
        "max": int(values.max()),
    }


def prepare_data(spec: DataSpec, tokenizer, train_path, eval_path, card_path) -> dict:
    """Load, check and split the data; write train and eval Parquet files and the data card; return the card.

    Nothing is written until every check has passed, the card is written last, and on any error
    all three outputs are removed, so no output is left looking complete.
    """
    outputs = [Path(train_path), Path(eval_path), Path(card_path)]
    try:
        loaded, kept = _usable_rows(spec)
        if spec.eval_source is None:
            train, evaluation = split_texts(kept, spec.eval_fraction, spec.seed)
            held_out = None
        else:
            held_out, evaluation = _usable_rows(spec.eval_source)
            train = kept
        card = _data_card(spec, loaded, held_out, {"train": train, "eval": evaluation}, tokenizer)
        with atomic_path(outputs[0]) as train_tmp, atomic_path(outputs[1]) as eval_tmp:
            write_texts_parquet(train_tmp, train)
            write_texts_parquet(eval_tmp, evaluation)
        write_json(outputs[2], card)
    except BaseException:
        for path in outputs:
            path.unlink(missing_ok=True)
        raise
    return card


def _usable_rows(spec: DataSpec) -> tuple[LoadedData, list[str]]:
    """The spec's rows, loaded and checked, without empty ones and cut to max_rows (logged)."""
    loaded = load_texts(spec)
    texts, loaded.dropped_empty = drop_empty_rows(loaded.texts)
    if loaded.dropped_empty:
        log.warning("%s: dropped %d empty or whitespace-only rows", spec.key, loaded.dropped_empty)
    if not texts:
        raise DataError(
            f"{spec.key}.name = {spec.name!r}: every one of its {len(loaded.texts)} rows is empty or whitespace"
        )
    kept = texts[: spec.max_rows] if spec.max_rows is not None else texts
    if len(kept) < len(texts):
        log.info("kept the first %d of %d rows (%s.max_rows)", len(kept), len(texts), spec.key)
    return loaded, kept


def write_texts_parquet(path, texts: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({OUTPUT_COLUMN: pa.array(texts, type=pa.string())}), str(path))


def read_data_file(path: Path, text_column: str) -> tuple[list[str], list | None]:
    """(columns, values of text_column or None if absent) from a .json, .jsonl, .csv or .parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path, text_column)
    text = _read_utf8(path)
    if suffix == ".csv":
        return _read_csv(path, text, text_column)
    records = _parse_json_lines(path, text) if suffix == ".jsonl" else _parse_json(path, text)
    return _records_column(path, records, text_column)


def read_data_folder(path: Path, split: str, key: str = "data"):
    """A datasets.Dataset from a `save_to_disk` folder or, through datasets.load_dataset, a folder of data files."""
    import datasets

    if any((path / marker).is_file() for marker in SAVE_TO_DISK_MARKERS):
        try:
            dataset = datasets.load_from_disk(str(path))
        except Exception as error:
            raise DataError(f"{path}: could not load the data set saved there: {_reason(error)}") from None
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise DataError(f"{path} has no split {split!r} ({key}.split); its splits: {', '.join(dataset)}")
            dataset = dataset[split]
        return dataset
    for file in _folder_files(path, FOLDER_TEXT_SUFFIXES):
        _read_utf8(file)
    try:
        return datasets.load_dataset(str(path), split=split)
    except Exception as error:
        if _is_unknown_split(error):
            raise DataError(f"{path} has no split {split!r} ({key}.split): {_reason(error)}") from None
        _raise_first_unreadable_file(path)
        raise DataError(
            f"{path}: datasets.load_dataset could not load the folder: {_reason(error, innermost=True)}"
        ) from None


def load_hub_dataset(name: str, revision: str | None, split: str, key: str = "data", subset: str | None = None):
    """datasets.load_dataset for a hub id (it uses the hub cache when offline); clear errors when it fails.

    `subset` is the data set's configuration, where it has several (wikitext's wikitext-2-raw-v1)."""
    import datasets

    configuration = {"name": subset} if subset is not None else {}
    try:
        return datasets.load_dataset(name, revision=revision, split=split, **configuration)
    except Exception as error:
        if _is_unknown_split(error):
            raise DataError(f"hub data set {name!r} has no split {split!r} ({key}.split): {_reason(error)}") from None
        if _is_unreachable(error):
            raise DataError(
                f"{key}.name = {name!r}: could not load it from the Hugging Face hub: the network or the hub "
                f"cache was unreachable, or no data set has that id ({_reason(error)}); {_USE_INSTEAD}"
            ) from None
        raise DataError(f"{key}.name = {name!r}: could not load the hub data set: {_reason(error)}") from None


def resolved_hub_revision(dataset, requested: str | None) -> str | None:
    """The commit the hub data set was loaded from, where datasets shows it, else the requested revision.

    datasets keeps no revision attribute on a Dataset, but it caches a hub data set under a folder
    named after the commit hash it resolved: <cache>/<name>/<config>/<version>/<commit>/<file>.arrow.
    """
    for cache_file in getattr(dataset, "cache_files", None) or []:
        folder = Path(cache_file.get("filename", "")).parent.name
        if _COMMIT_HASH.match(folder):
            return folder
    return requested


def _data_card(
    spec: DataSpec, loaded: LoadedData, held_out: LoadedData | None, splits: dict[str, list[str]], tokenizer
) -> dict:
    lengths = {name: token_lengths(tokenizer, texts) for name, texts in splits.items()}
    # Rows longer than max_seq_length stay as they are: training truncates them, the card counts them.
    truncated = {name: sum(n > spec.max_seq_length for n in values) for name, values in lengths.items()}
    card = {
        "source": loaded.source,
        "name": spec.name,
        "revision": loaded.revision,
        "split": spec.split if loaded.source in ("local_folder", "hub") else None,
        "text_column": spec.text_column,
    }
    if loaded.source == EMBEDDED:
        card["python_version"] = python_version()
        card["embedded_rows"] = spec.embedded_rows
    card.update(
        {
            "seed": spec.seed,
            "eval_fraction": spec.eval_fraction if held_out is None else None,
            "max_rows": spec.max_rows,
            # Of the rows written, train then eval: training keys its checkpoints on it, so it must
            # change whenever either output does (a new eval_fraction or seed included).
            "fingerprint": fingerprint(splits["train"], splits["eval"]),
            "rows": {
                "loaded": len(loaded.texts),
                "dropped_empty": loaded.dropped_empty,
                "dropped_over_max_rows": len(loaded.texts)
                - loaded.dropped_empty
                - len(splits["train"])
                - (len(splits["eval"]) if held_out is None else 0),
                "train": len(splits["train"]),
                "eval": len(splits["eval"]),
            },
            "max_seq_length": spec.max_seq_length,
            "token_length": {name: length_stats(values) for name, values in lengths.items()},
            "truncated_rows": truncated,
        }
    )
    if held_out is not None:
        source = spec.eval_source
        card["eval_source"] = {
            "source": held_out.source,
            "name": source.name,
            "revision": held_out.revision,
            "split": source.split if held_out.source in ("local_folder", "hub") else None,
            "max_rows": source.max_rows,
            "rows": {
                "loaded": len(held_out.texts),
                "dropped_empty": held_out.dropped_empty,
                "dropped_over_max_rows": len(held_out.texts) - held_out.dropped_empty - len(splits["eval"]),
            },
        }
    return card


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or name.endswith(("/", "\\"))
        or name.lower().endswith(FILE_SUFFIXES)
        or name.count("/") > 1
    )


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not valid UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start}: "
            f"{error.reason}); save it as UTF-8"
        ) from None


def _parse_json(path: Path, text: str) -> list:
    """A .json file: one JSON document (a list of records, or one record) or JSON lines."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # more than one document: JSON lines
            return _parse_json_lines(path, text)
        raise DataError(f"{path}: not valid JSON: {error}") from None
    return document if isinstance(document, list) else [document]


def _parse_json_lines(path: Path, text: str) -> list:
    records = []
    # split on "\n" only: str.splitlines would also split at U+2028 and others, which JSON allows in strings
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: line {line_number} is not valid JSON: {error}") from None
    return records


def _records_column(path: Path, records: list, text_column: str) -> tuple[list[str], list | None]:
    columns: dict[str, None] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: record index {index} is {_describe_value(record)}; "
                f"expected an object with a {text_column!r} field"
            )
        columns.update(dict.fromkeys(record))
    if text_column not in columns:
        return list(columns), None
    return list(columns), [record.get(text_column, _MISSING) for record in records]


def _read_csv(path: Path, text: str, text_column: str) -> tuple[list[str], list | None]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return [], None
        if text_column not in header:
            return header, None
        column = header.index(text_column)
        values = []
        for row in reader:
            if not row:
                continue
            if len(row) > len(header):
                raise DataError(
                    f"{path}: not valid CSV: line {reader.line_num} has {len(row)} fields, the header has {len(header)}"
                )
            # A row with fewer fields than the header has no text: it counts as empty, not as a type error.
            values.append(row[column] if column < len(row) else "")
    except csv.Error as error:
        raise DataError(f"{path}: not valid CSV: line {reader.line_num}: {error}") from None
    return header, values


def _read_parquet(path: Path, text_column: str) -> tuple[list[str], list | None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        columns = pq.read_schema(path).names
        if text_column not in columns:
            return columns, None
        return columns, pq.read_table(path, columns=[text_column]).column(0).to_pylist()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: column {text_column!r} holds invalid UTF-8 ({error.reason})") from None
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable Parquet file: {_reason(error)}") from None


def _dataset_column(dataset, text_column: str, where: str) -> tuple[list[str], list | None]:
    columns = list(dataset.column_names)
    if text_column not in columns:
        return columns, None
    try:
        return columns, list(dataset[text_column])
    except UnicodeDecodeError as error:
        raise DataError(f"{where}: column {text_column!r} holds invalid UTF-8 ({error.reason})") from None


def _folder_files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files under `path` with one of `suffixes`, hidden files and folders left out, sorted."""
    return sorted(
        file
        for file in path.rglob("*")
        if file.is_file()
        and file.suffix.lower() in suffixes
        and not any(part.startswith(".") for part in file.relative_to(path).parts)
    )


def _raise_first_unreadable_file(path: Path) -> None:
    """After datasets failed on a folder, name the file that does not parse, if our own readers find one,
    or say that the folder's data files hold no rows at all."""
    files = _folder_files(path, FILE_SUFFIXES)
    any_rows = False
    for file in files:
        columns, values = read_data_file(file, OUTPUT_COLUMN)
        any_rows = any_rows or bool(values if values is not None else columns)
    if files and not any_rows:
        raise DataError(f"{path} has no rows (its data files are empty)")


def _is_unknown_split(error: Exception) -> bool:
    return isinstance(error, ValueError) and "Unknown split" in str(error)


def _is_unreachable(error: Exception) -> bool:
    if isinstance(error, OSError):  # ConnectionError, FileNotFoundError (DatasetNotFoundError), HfHubHTTPError
        return True
    try:
        import httpx
    except ImportError:
        return False
    return isinstance(error, httpx.HTTPError)


def _reason(error: BaseException, innermost: bool = False) -> str:
    """One line saying why, hub tokens masked; `innermost` follows the causes down to the last with a message."""
    while innermost and error.__cause__ is not None and str(error.__cause__).strip():
        error = error.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return _HUB_TOKEN.sub("hf_***", text)


def _describe_value(value) -> str:
    if value is _MISSING:
        return "no value (the field is missing)"
    if value is None:
        return "null"
    kind = type(value).__name__
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} ({_short_repr(value)})"


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
