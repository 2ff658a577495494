"""The data stage: every source kind, every refusal, the split, the data card and the entry script."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import huggingface_hub
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ftcompare import data
from ftcompare.data import (
    DataError,
    DataSpec,
    check_text_rows,
    drop_empty_rows,
    fingerprint,
    length_stats,
    load_texts,
    prepare_data,
    resolved_hub_revision,
    source_kind,
    split_texts,
    token_lengths,
)
from ftcompare.errors import FtcompareError

REPO = Path(__file__).resolve().parents[1]
TEXTS = [f"row {i} " + "word " * i for i in range(1, 13)]  # row i has i + 2 whitespace tokens


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """No test may reach the network: the hub is offline and datasets caches under tmp_path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


@pytest.fixture(scope="module")
def tokenizer():
    """One token per whitespace-separated word; <s> and </s> are special tokens, none are added."""
    backend = Tokenizer(
        models.WordLevel(vocab={"<unk>": 0, "<s>": 1, "</s>": 2, "row": 3, "word": 4}, unk_token="<unk>")
    )
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def make_spec(name, **overrides) -> DataSpec:
    values = dict(
        name=str(name),
        revision=None,
        split="train",
        text_column="text",
        eval_fraction=0.25,
        max_rows=None,
        embedded_rows=40,
        seed=1,
        max_seq_length=8,
    )
    values.update(overrides)
    return DataSpec(**values)


def outputs(tmp_path):
    out = tmp_path / "out"
    return out / "train.parquet", out / "eval.parquet", out / "data_card.json"


def read_parquet_texts(path) -> list[str]:
    table = pq.read_table(path)
    assert table.column_names == ["text"]
    assert table.schema.field("text").type == pa.string()
    return table.column("text").to_pylist()


def write_jsonl(path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- the spec -------------------------------------------------------------------------------------


def test_spec_from_the_validated_config(default_config):
    # As the prepare_data rule passes it: the `data` section, the seed and training.max_seq_length.
    spec = DataSpec.from_section(
        default_config["data"], seed=default_config["seed"], max_seq_length=default_config["training"]["max_seq_length"]
    )
    assert spec == DataSpec(
        name="embedded",
        revision=None,
        split="train",
        text_column="text",
        eval_fraction=0.1,
        max_rows=None,
        embedded_rows=1100,
        seed=42,
        max_seq_length=default_config["training"]["max_seq_length"],
    )


def test_spec_from_the_rule_params_without_embedded_rows(default_config):
    section = {**default_config["data"], "name": "org/set", "revision": "v1"}
    del section["embedded_rows"]
    spec = DataSpec.from_section(section, seed=5, max_seq_length=64)
    assert (spec.name, spec.revision, spec.embedded_rows, spec.seed, spec.max_seq_length) == (
        "org/set",
        "v1",
        None,
        5,
        64,
    )


def test_spec_with_a_held_out_source_of_its_own(default_config):
    section = {
        **default_config["data"],
        "name": "org/set",
        "eval_source": {"name": "org/other", "revision": None, "split": "test", "max_rows": 50},
    }
    spec = DataSpec.from_section(section, seed=5, max_seq_length=64)
    held_out = spec.eval_source
    assert (held_out.name, held_out.split, held_out.max_rows, held_out.key) == (
        "org/other",
        "test",
        50,
        "data.eval_source",
    )
    assert (held_out.text_column, held_out.seed, held_out.eval_source) == (spec.text_column, 5, None)
    assert DataSpec.from_section(default_config["data"], seed=5, max_seq_length=64).eval_source is None


# --- sources --------------------------------------------------------------------------------------


def test_source_kinds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "local.jsonl", [{"text": "a"}])
    (tmp_path / "folder").mkdir()
    assert source_kind("embedded") == "embedded"
    assert source_kind("local.jsonl") == "local_file"
    assert source_kind(str(tmp_path / "local.jsonl")) == "local_file"
    assert source_kind("folder") == "local_folder"
    assert source_kind("mlabonne/guanaco-llama2-1k") == "hub"
    assert source_kind("squad") == "hub"


@pytest.mark.parametrize(
    "name",
    [
        "./missing",
        "missing.jsonl",
        "data/missing.csv",
        "~/missing-ftcompare-data",
        "/no/such/data.parquet",
        "a/b/c",
        "folder/",
    ],
)
def test_a_path_that_does_not_exist_is_named(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"data.name = {name!r}: no such file or folder"):
        source_kind(name)


def test_unsupported_file_type_and_non_id_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(DataError, match=r"'notes.txt': unsupported file type '.txt'; allowed: .json, .jsonl"):
        source_kind("notes.txt")
    with pytest.raises(DataError, match="not a Hugging Face hub id"):
        source_kind("not an id")


def test_embedded_source():
    loaded = load_texts(make_spec("embedded", embedded_rows=30, seed=3))
    assert loaded.source == "embedded" and loaded.revision is None
    assert len(loaded.texts) == 30
    assert all(t.startswith("<s>[INST] ") and t.endswith(" </s>") for t in loaded.texts)


def test_json_list_of_records(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": t, "id": i} for i, t in enumerate(TEXTS)]), encoding="utf-8")
    loaded = load_texts(make_spec(path))
    assert loaded.texts == TEXTS and loaded.source == "local_file"


def test_json_file_holding_json_lines_or_one_record(tmp_path):
    lines = write_jsonl(tmp_path / "lines.json", [{"text": t} for t in TEXTS])
    assert load_texts(make_spec(lines)).texts == TEXTS
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"text": "only row"}, indent=2), encoding="utf-8")
    assert load_texts(make_spec(one)).texts == ["only row"]


def test_jsonl_with_another_text_column_and_unicode_line_separators(tmp_path):
    texts = ["a\u2028b", "c\nd", "é ü"]
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": t} for t in texts])
    assert load_texts(make_spec(path, text_column="prompt")).texts == texts


def test_csv_with_quoted_newlines_bom_and_short_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes('\ufeffid,text\n1,"first, with comma"\n2,"two\nlines"\n3\n'.encode("utf-8"))
    assert load_texts(make_spec(path)).texts == ["first, with comma", "two\nlines", ""]


def test_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": TEXTS, "n": list(range(len(TEXTS)))}), path)
    assert load_texts(make_spec(path)).texts == TEXTS


def test_a_revision_does_not_apply_to_local_data(tmp_path, caplog):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with caplog.at_level("WARNING", logger="ftcompare.data"):
        assert load_texts(make_spec(path, revision="v2")).revision is None
    assert "data.revision = 'v2' is ignored" in caplog.text


def test_folder_of_jsonl_files(tmp_path):
    write_jsonl(tmp_path / "folder" / "part-a.jsonl", [{"text": t} for t in TEXTS[:5]])
    write_jsonl(tmp_path / "folder" / "part-b.jsonl", [{"text": t} for t in TEXTS[5:]])
    loaded = load_texts(make_spec(tmp_path / "folder"))
    assert loaded.source == "local_folder"
    assert sorted(loaded.texts) == sorted(TEXTS)


def test_hub_style_folder_with_splits(tmp_path):
    folder = tmp_path / "hubstyle"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"text": TEXTS[:8]}), folder / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": TEXTS[8:]}), folder / "data" / "test-00000-of-00001.parquet")
    assert load_texts(make_spec(folder, split="test")).texts == TEXTS[8:]
    assert load_texts(make_spec(folder)).texts == TEXTS[:8]
    with pytest.raises(DataError, match=r"has no split 'validation' \(data.split\)"):
        load_texts(make_spec(folder, split="validation"))


def test_save_to_disk_folders(tmp_path):
    datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(tmp_path / "saved"))
    assert load_texts(make_spec(tmp_path / "saved")).texts == TEXTS
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": TEXTS[:4]}),
            "test": datasets.Dataset.from_dict({"text": TEXTS[4:]}),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    assert load_texts(make_spec(tmp_path / "dd", split="test")).texts == TEXTS[4:]
    with pytest.raises(DataError, match=r"has no split 'dev' \(data.split\); its splits: train, test"):
        load_texts(make_spec(tmp_path / "dd", split="dev"))


# --- the hub --------------------------------------------------------------------------------------


def test_hub_id_goes_through_datasets_load_dataset(monkeypatch, tmp_path, tokenizer):
    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_dict({"text": TEXTS})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = make_spec("someone/some-set", revision="v1.0", split="train")
    card = prepare_data(spec, tokenizer, *outputs(tmp_path))
    assert calls == [("someone/some-set", {"revision": "v1.0", "split": "train"})]
    assert (card["source"], card["name"], card["revision"], card["split"]) == (
        "hub",
        "someone/some-set",
        "v1.0",
        "train",
    )


def test_hub_revision_is_the_resolved_commit_where_datasets_caches_it(monkeypatch, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache_dir = tmp_path / "cache" / "someone___some-set" / "default" / "0.0.0" / commit
    cache_dir.mkdir(parents=True)
    cached = datasets.Dataset.from_dict({"text": TEXTS}).map(
        lambda row: row, cache_file_name=str(cache_dir / "some-set-train.arrow")
    )
    assert resolved_hub_revision(cached, None) == commit
    assert resolved_hub_revision(datasets.Dataset.from_dict({"text": TEXTS}), "main") == "main"
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: cached)
    assert load_texts(make_spec("someone/some-set")).revision == commit


def test_real_offline_hub_call_names_the_id_and_the_ways_out(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        "PYTHONPATH": str(REPO / "scripts"),
    }
    code = textwrap.dedent("""
        from ftcompare.data import DataError, DataSpec, load_texts
        spec = DataSpec("nobody-ftcompare/made-up-data-set", None, "train", "text", 0.1, None, None, 1, 64)
        try:
            load_texts(spec)
        except DataError as error:
            print("DataError:", error)
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert message.startswith(
        "DataError: data.name = 'nobody-ftcompare/made-up-data-set': could not load it from the Hugging Face hub"
    )
    assert "the network or the hub cache was unreachable, or no data set has that id" in message
    assert "local file" in message and "`data.name: embedded`" in message


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("Couldn't reach 'x/y' on the Hub (token hf_abcdefghijklmnopqrstu)"),
        datasets.exceptions.DatasetNotFoundError("Dataset 'x/y' doesn't exist on the Hub or cannot be accessed."),
    ],
)
def test_hub_failures_are_data_errors_without_tokens(monkeypatch, error):
    def failing_load_dataset(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", failing_load_dataset)
    with pytest.raises(DataError) as raised:
        load_texts(make_spec("x/y"))
    message = str(raised.value)
    assert message.startswith("data.name = 'x/y': could not load it from the Hugging Face hub")
    assert "hf_abcdefghijklmnopqrstu" not in message
    assert "embedded" in message


def test_hub_unknown_split(monkeypatch):
    def failing_load_dataset(*args, **kwargs):
        raise ValueError("Unknown split \"dev\". Should be one of ['train'].")

    monkeypatch.setattr(datasets, "load_dataset", failing_load_dataset)
    with pytest.raises(DataError, match=r"hub data set 'x/y' has no split 'dev' \(data.split\).*one of \['train'\]"):
        load_texts(make_spec("x/y", split="dev"))


# --- refusals -------------------------------------------------------------------------------------


def test_data_error_is_an_ftcompare_error():
    assert issubclass(DataError, FtcompareError)


def test_missing_text_column_lists_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": "b"}])
    with pytest.raises(
        DataError, match=r"d.jsonl has no column 'text' \(data.text_column\); its columns: prompt, answer"
    ):
        load_texts(make_spec(path))
    with pytest.raises(DataError, match=r"embedded data set has no column 'prompt'.*its columns: text"):
        load_texts(make_spec("embedded", text_column="prompt"))


@pytest.mark.parametrize(
    ("file_name", "content"),
    [
        ("empty.jsonl", ""),
        ("empty.json", "[]"),
        ("header_only.csv", "text,id\n"),
        ("blank.csv", ""),
    ],
)
def test_empty_data_set(tmp_path, file_name, content):
    path = tmp_path / file_name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{file_name} has no rows"):
        load_texts(make_spec(path))


def test_empty_parquet_and_folder_data_sets(tmp_path):
    pq.write_table(pa.table({"text": pa.array([], type=pa.string())}), tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="empty.parquet has no rows"):
        load_texts(make_spec(tmp_path / "empty.parquet"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(
        DataError,
        match=r"folder: datasets.load_dataset could not load the folder: .*doesn't contain "
        r"any data files",
    ):
        load_texts(make_spec(tmp_path / "folder"))
    (tmp_path / "folder" / "part.jsonl").write_text("")
    with pytest.raises(DataError, match=r"folder has no rows \(its data files are empty\)"):
        load_texts(make_spec(tmp_path / "folder"))


@pytest.mark.parametrize(
    ("value", "described"),
    [
        (5, r"an int \(5\)"),
        (None, "null"),
        (["a", "list"], r"a list \(\['a', 'list'\]\)"),
    ],
)
def test_a_row_that_is_not_a_string(tmp_path, value, described):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "fine"}, {"text": "also fine"}, {"text": value}])
    with pytest.raises(DataError, match=rf"d.jsonl: row index 2: column 'text' holds {described}, not a string"):
        load_texts(make_spec(path))


def test_a_record_without_the_text_field_or_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "fine"}, {"other": "x"}])
    with pytest.raises(DataError, match=r"row index 1: column 'text' holds no value \(the field is missing\)"):
        load_texts(make_spec(path))
    path = tmp_path / "strings.json"
    path.write_text(json.dumps(["just", "strings"]), encoding="utf-8")
    with pytest.raises(DataError, match=r"strings.json: record index 0 is a str \('just'\); expected an object"):
        load_texts(make_spec(path))


def test_non_string_parquet_column(tmp_path):
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "ints.parquet")
    with pytest.raises(DataError, match=r"ints.parquet: row index 0: column 'text' holds an int \(1\)"):
        load_texts(make_spec(tmp_path / "ints.parquet"))


@pytest.mark.parametrize(
    ("file_name", "content", "reason"),
    [
        (
            "bad.jsonl",
            '{"text": "ok"}\n{"text": oops}\n',
            r"bad.jsonl: line 2 is not valid JSON: Expecting value: line 1",
        ),
        ("bad.json", '[{"text": "ok"},', r"bad.json: not valid JSON: Expecting"),
        ("quote.csv", 'text\n"never closed\n', r"quote.csv: not valid CSV: line \d+: unexpected end of data"),
        ("wide.csv", "text,id\na,1\nb,2,3\n", r"wide.csv: not valid CSV: line 3 has 3 fields, the header has 2"),
        ("garbage.parquet", "this is not parquet", r"garbage.parquet: not a readable Parquet file: Arrow"),
    ],
)
def test_a_file_that_does_not_parse(tmp_path, file_name, content, reason):
    path = tmp_path / file_name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=reason):
        load_texts(make_spec(path))


def test_invalid_utf8_names_the_file_and_offset(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl: not valid UTF-8 \(byte 0xe9 at offset 28"):
        load_texts(make_spec(path))
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes(b"text\n\xff\n")
    with pytest.raises(DataError, match=r"latin1.csv: not valid UTF-8 \(byte 0xff at offset 5"):
        load_texts(make_spec(csv_path))


def test_invalid_utf8_or_bad_json_inside_a_folder_names_the_file(tmp_path):
    write_jsonl(tmp_path / "folder" / "good.jsonl", [{"text": "fine"}])
    (tmp_path / "folder" / "bad.jsonl").write_bytes(b'{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: not valid UTF-8 \(byte 0xff at offset 10"):
        load_texts(make_spec(tmp_path / "folder"))
    (tmp_path / "folder" / "bad.jsonl").write_text('{"text": "a"}\n{"text": nope}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl: line 2 is not valid JSON"):
        load_texts(make_spec(tmp_path / "folder"))


def test_check_text_rows_directly():
    assert check_text_rows(["text"], ["a", ""], "text", "here") == ["a", ""]
    with pytest.raises(DataError, match="here has no rows"):
        check_text_rows([], None, "text", "here")
    with pytest.raises(DataError, match="here has no rows"):
        check_text_rows(["text"], [], "text", "here")


# --- cleaning and splitting -----------------------------------------------------------------------


def test_empty_rows_are_dropped_and_counted():
    assert drop_empty_rows(["a", "", "  \n\t", "b "]) == (["a", "b "], 2)


def test_split_sizes_and_partition():
    train, evaluation = split_texts(TEXTS[:10], eval_fraction=0.3, seed=1)
    assert (len(train), len(evaluation)) == (7, 3)
    assert sorted(train + evaluation) == sorted(TEXTS[:10])
    assert train == [t for t in TEXTS[:10] if t in train]  # the input order is kept
    assert len(split_texts(TEXTS[:5], eval_fraction=0.01, seed=1)[1]) == 1  # at least one eval row
    assert len(split_texts(TEXTS[:2], eval_fraction=0.5, seed=1)[0]) == 1


def test_split_is_deterministic_by_seed():
    texts = [f"text {i}" for i in range(200)]
    assert split_texts(texts, 0.1, seed=7) == split_texts(texts, 0.1, seed=7)
    assert split_texts(texts, 0.1, seed=7)[1] != split_texts(texts, 0.1, seed=8)[1]
    # Pinned: a change here would silently change every user's eval set.
    assert split_texts(texts[:10], 0.2, seed=0)[1] == [texts[i] for i in sorted(split_index_pin())]


def split_index_pin():
    import hashlib

    ranked = sorted(range(10), key=lambda i: hashlib.sha256(f"0:{i}".encode()).digest())
    return ranked[:2]


@pytest.mark.parametrize(("n_rows", "fraction"), [(1, 0.5), (2, 0.9)])
def test_too_few_rows_to_split(n_rows, fraction):
    with pytest.raises(
        DataError,
        match=rf"{n_rows} rows? cannot be split into train and eval with "
        rf"data.eval_fraction = {fraction}",
    ):
        split_texts(TEXTS[:n_rows], fraction, seed=1)


# --- lengths and fingerprint ----------------------------------------------------------------------


def test_token_lengths_and_stats(tokenizer):
    assert token_lengths(tokenizer, ["a b c", "<s>[INST] x [/INST] y </s>", "one"]) == [3, 6, 1]
    stats = length_stats([1, 2, 3, 4, 100])
    assert stats == {"min": 1, "mean": 22.0, "median": 3.0, "p95": 80.8, "max": 100}


def test_fingerprint_depends_on_content_order_and_split_boundary():
    assert fingerprint(["a", "b"], ["c"]) == fingerprint(["a", "b"], ["c"])
    assert len(fingerprint(["a"])) == 64
    assert fingerprint(["a", "b"], ["c"]) != fingerprint(["b", "a"], ["c"])
    assert fingerprint(["a", "b"], ["c"]) != fingerprint(["a"], ["b", "c"])
    assert fingerprint(["ab"]) != fingerprint(["a", "b"])


# --- prepare_data: outputs and the card -----------------------------------------------------------


def test_card_and_outputs_for_a_local_file(tmp_path, tokenizer):
    texts = TEXTS[:6] + ["   ", ""] + TEXTS[6:]
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    train_path, eval_path, card_path = outputs(tmp_path)
    card = prepare_data(
        make_spec(source, eval_fraction=0.25, seed=3, max_seq_length=8), tokenizer, train_path, eval_path, card_path
    )
    train, evaluation = read_parquet_texts(train_path), read_parquet_texts(eval_path)
    assert (train, evaluation) == split_texts(TEXTS, 0.25, seed=3)
    assert json.loads(card_path.read_text(encoding="utf-8")) == card
    assert card["source"] == "local_file" and card["name"] == str(source)
    assert card["revision"] is None and card["split"] is None and card["text_column"] == "text"
    assert "python_version" not in card
    assert card["rows"] == {"loaded": 14, "dropped_empty": 2, "dropped_over_max_rows": 0, "train": 9, "eval": 3}
    assert card["fingerprint"] == fingerprint(train, evaluation)
    assert card["max_seq_length"] == 8
    lengths = {"train": [len(t.split()) for t in train], "eval": [len(t.split()) for t in evaluation]}
    for split in ("train", "eval"):
        assert card["token_length"][split] == length_stats(lengths[split])
        assert card["token_length"][split]["max"] == max(lengths[split])
        assert card["truncated_rows"][split] == sum(n > 8 for n in lengths[split])
    assert card["truncated_rows"]["train"] + card["truncated_rows"]["eval"] == 6  # rows 7..12 have 9..14 tokens
    assert sorted(train + evaluation) == sorted(TEXTS)  # truncation is counted, never applied here


def test_a_held_out_source_of_its_own_leaves_every_row_to_train(tmp_path, tokenizer):
    """The blog trained on all 1,000 rows: with data.eval_source the held-out rows come from elsewhere."""
    train_source = write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in TEXTS])
    held_out_rows = ["w1 w2", "", "w3 w4 w5", "w6", "w7 w8"]
    held_out_source = write_jsonl(tmp_path / "test.jsonl", [{"text": t} for t in held_out_rows])
    spec = make_spec(train_source, eval_fraction=0.25, seed=3, max_seq_length=8)
    spec = dataclasses.replace(
        spec,
        eval_source=dataclasses.replace(spec, name=str(held_out_source), max_rows=2, key="data.eval_source"),
    )
    train_path, eval_path, card_path = outputs(tmp_path)
    card = prepare_data(spec, tokenizer, train_path, eval_path, card_path)
    assert read_parquet_texts(train_path) == TEXTS
    assert read_parquet_texts(eval_path) == ["w1 w2", "w3 w4 w5"]
    assert card["eval_fraction"] is None
    assert card["rows"] == {
        "loaded": len(TEXTS),
        "dropped_empty": 0,
        "dropped_over_max_rows": 0,
        "train": len(TEXTS),
        "eval": 2,
    }
    assert card["eval_source"] == {
        "source": "local_file",
        "name": str(held_out_source),
        "revision": None,
        "split": None,
        "max_rows": 2,
        "rows": {"loaded": 5, "dropped_empty": 1, "dropped_over_max_rows": 2},
    }
    assert card["fingerprint"] == fingerprint(TEXTS, ["w1 w2", "w3 w4 w5"])


def test_a_missing_held_out_source_is_named_by_its_key(tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in TEXTS])
    spec = make_spec(source)
    spec = dataclasses.replace(
        spec, eval_source=dataclasses.replace(spec, name=str(tmp_path / "nope.jsonl"), key="data.eval_source")
    )
    with pytest.raises(DataError, match=r"^data.eval_source.name = '.*nope.jsonl': no such file or folder"):
        prepare_data(spec, tokenizer, *outputs(tmp_path))
    assert not any(path.exists() for path in outputs(tmp_path))


def test_card_for_the_embedded_source(tmp_path, tokenizer):
    card = prepare_data(
        make_spec("embedded", embedded_rows=40, eval_fraction=0.1, max_seq_length=2048), tokenizer, *outputs(tmp_path)
    )
    assert card["source"] == "embedded" and card["revision"] is None
    assert card["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert card["embedded_rows"] == 40
    assert card["rows"] == {"loaded": 40, "dropped_empty": 0, "dropped_over_max_rows": 0, "train": 36, "eval": 4}
    assert card["truncated_rows"] == {"train": 0, "eval": 0}
    assert set(card) == {
        "source",
        "name",
        "revision",
        "split",
        "text_column",
        "python_version",
        "embedded_rows",
        "seed",
        "eval_fraction",
        "max_rows",
        "fingerprint",
        "rows",
        "max_seq_length",
        "token_length",
        "truncated_rows",
    }
    assert set(card["token_length"]["train"]) == {"min", "mean", "median", "p95", "max"}


def test_same_spec_same_outputs_other_eval_fraction_other_fingerprint(tmp_path, tokenizer):
    spec = make_spec("embedded", embedded_rows=30)
    first = prepare_data(spec, tokenizer, *outputs(tmp_path / "a"))
    again = prepare_data(spec, tokenizer, *outputs(tmp_path / "b"))
    assert first == again
    assert outputs(tmp_path / "a")[0].read_bytes() == outputs(tmp_path / "b")[0].read_bytes()
    other = prepare_data(
        make_spec("embedded", embedded_rows=30, eval_fraction=0.5), tokenizer, *outputs(tmp_path / "c")
    )
    assert other["fingerprint"] != first["fingerprint"]


def test_max_rows_keeps_the_first_rows_with_text(tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in ["", TEXTS[0], " ", *TEXTS[1:]]])
    train_path, eval_path, card_path = outputs(tmp_path)
    card = prepare_data(make_spec(source, max_rows=4), tokenizer, train_path, eval_path, card_path)
    assert sorted(read_parquet_texts(train_path) + read_parquet_texts(eval_path)) == sorted(TEXTS[:4])
    assert card["rows"] == {"loaded": 14, "dropped_empty": 2, "dropped_over_max_rows": 8, "train": 3, "eval": 1}
    assert card["max_rows"] == 4


def test_all_rows_empty(tmp_path, tokenizer):
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": " "}, {"text": ""}, {"text": "\n"}])
    with pytest.raises(DataError, match="every one of its 3 rows is empty or whitespace"):
        prepare_data(make_spec(source), tokenizer, *outputs(tmp_path))


def test_no_outputs_left_on_a_data_error(tmp_path, tokenizer):
    paths = outputs(tmp_path)
    paths[0].parent.mkdir(parents=True)
    for path in paths:  # stale outputs of an earlier run must not survive looking complete
        path.write_text("stale")
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": "fine"}, {"text": 3}])
    with pytest.raises(DataError):
        prepare_data(make_spec(source), tokenizer, *paths)
    assert list(paths[0].parent.iterdir()) == []


def test_no_outputs_left_when_writing_fails(tmp_path, tokenizer, monkeypatch):
    real_write = data.write_texts_parquet
    written = []

    def write_then_fail(path, texts):
        written.append(path)
        if len(written) == 2:
            raise OSError("disk full")
        real_write(path, texts)

    monkeypatch.setattr(data, "write_texts_parquet", write_then_fail)
    paths = outputs(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        prepare_data(make_spec("embedded", embedded_rows=20), tokenizer, *paths)
    assert list(paths[0].parent.iterdir()) == []


# --- the entry script -----------------------------------------------------------------------------

RUN_ENTRY_SCRIPT = """
import runpy, sys, types
args = {args!r}
smk = types.SimpleNamespace(
    rule="prepare_data",
    input=types.SimpleNamespace(base_model=args["model"]),
    params=types.SimpleNamespace(data=args["data"], seed=3, max_seq_length=8, trust_remote_code=False),
    output=types.SimpleNamespace(train=args["train"], eval=args["eval"], card=args["card"]),
    log=[args["log"]],
)
runpy.run_path(args["script"], init_globals={{"snakemake": smk}}, run_name="__main__")
"""


def run_entry_script(tmp_path, model_dir, data_section):
    paths = outputs(tmp_path)
    args = {
        "model": str(model_dir),
        "data": data_section,
        "train": str(paths[0]),
        "eval": str(paths[1]),
        "card": str(paths[2]),
        "log": str(tmp_path / "prepare_data.log"),
        "script": str(REPO / "scripts" / "prepare_data.py"),
    }
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        "PYTHONPATH": str(REPO / "scripts"),
    }
    result = subprocess.run(
        [sys.executable, "-c", RUN_ENTRY_SCRIPT.format(args=args)], env=env, capture_output=True, text=True, timeout=180
    )
    return result, paths, (tmp_path / "prepare_data.log").read_text(encoding="utf-8")


def test_entry_script_writes_the_outputs_and_logs_the_counts(tmp_path, tokenizer):
    model_dir = tmp_path / "base_model"
    tokenizer.save_pretrained(model_dir)
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS])
    section = {
        "name": str(source),
        "revision": None,
        "split": "train",
        "text_column": "text",
        "eval_fraction": 0.25,
        "max_rows": None,
    }
    result, paths, log = run_entry_script(tmp_path, model_dir, section)
    assert result.returncode == 0, result.stderr + log
    card = json.loads(paths[2].read_text(encoding="utf-8"))
    assert card["rows"]["train"] == 9 and card["rows"]["eval"] == 3
    assert read_parquet_texts(paths[0]) == split_texts(TEXTS, 0.25, seed=3)[0]
    assert "ftcompare.data" in log and "9 train, 3 eval" in log and "rows over max_seq_length 8" in log


def test_entry_script_fails_with_one_clear_line(tmp_path, tokenizer):
    model_dir = tmp_path / "base_model"
    tokenizer.save_pretrained(model_dir)
    section = {
        "name": "./no-such-data.jsonl",
        "revision": None,
        "split": "train",
        "text_column": "text",
        "eval_fraction": 0.25,
        "max_rows": None,
    }
    result, paths, log = run_entry_script(tmp_path, model_dir, section)
    assert result.returncode == 1
    assert "ftcompare: rule prepare_data: data.name = './no-such-data.jsonl': no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(path.exists() for path in paths)
