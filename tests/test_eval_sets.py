"""Evaluation sets (ftcompare.eval_sets, the `eval_sets` config section): validation and its messages, the
embedded source set (disjoint from the pretraining text, fixed), a local file, and a hub id (with its subset)
through the same loading code as the training data."""

import json

import datasets
import huggingface_hub
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO
from ftcompare.config import ConfigError, validate_config
from ftcompare.data import DataError
from ftcompare.embedded_data import STDLIB_MODULES
from ftcompare.eval_sets import EvalSetSpec, eval_set_roles, eval_settings, load_eval_set, prepare_eval_set
from ftcompare.pretraining_text import HELD_OUT_MODULES, held_out_pretraining_texts, pretraining_texts
from ftcompare.strict_json import loads as loads_strict


def validated(eval_sets, **other):
    return validate_config({"eval_sets": eval_sets, **other}, search_dirs=[REPO], check_packages=False)


def problems(eval_sets) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validated(eval_sets)
    return caught.value.problems


def spec(name="general", **section) -> EvalSetSpec:
    return EvalSetSpec.from_config(name, validated({name: section})["eval_sets"][name])


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """No test may reach the network: the hub is offline and datasets caches under tmp_path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


# --- the config -----------------------------------------------------------------------------------


def test_the_default_is_one_source_set_of_held_out_pretraining_text_with_every_key_filled():
    config = validate_config({}, search_dirs=[REPO], check_packages=False)
    assert config["eval_sets"] == {
        "pretraining": {
            "source": "embedded",
            "role": "source",
            "split": "test",
            "revision": None,
            "subset": None,
            "text_column": "text",
            "max_rows": 200,
        }
    }
    assert eval_set_roles(config["eval_sets"]) == [["heldout", "target"], ["pretraining", "source"]]


def test_the_blog_config_scores_wikitext_2_as_its_source_set():
    raw = yaml.safe_load((REPO / "config" / "blog.yaml").read_text(encoding="utf-8"))
    config = validate_config(raw, search_dirs=[REPO], check_packages=False)
    assert config["eval_sets"] == {
        "wikitext": {
            "source": "Salesforce/wikitext",
            "subset": "wikitext-2-raw-v1",
            "split": "test",
            "role": "source",
            "revision": None,
            "text_column": "text",
            "max_rows": 200,
        }
    }


def test_the_roles_list_heldout_first_then_the_sets_by_name():
    sets = {"zeta": {"role": "target"}, "alpha": {"role": "source"}}
    assert eval_set_roles(sets) == [["heldout", "target"], ["alpha", "source"], ["zeta", "target"]]


@pytest.mark.parametrize(
    ("eval_sets", "message"),
    [
        ({"x": {"source": "embedded"}}, "`eval_sets.x`: missing key `role`"),
        ({"x": {"role": "source"}}, "`eval_sets.x`: missing key `source`"),
        ({"x": {"source": "embedded", "role": "sauce"}}, "`eval_sets.x.role` = 'sauce': allowed values are target"),
        ({"x": {"source": "embedded", "role": "source", "max_rows": 0}}, "`eval_sets.x.max_rows` = 0: must be >= 1"),
        ({"x": {"source": "embedded", "role": "source", "rows": 3}}, "unknown key `eval_sets.x.rows`"),
        (
            {"heldout": {"source": "embedded", "role": "source"}},
            "eval_sets: the name 'heldout' is not allowed",
        ),
        ({"no/slash": {"source": "embedded", "role": "source"}}, "eval_sets: the name 'no/slash' is not allowed"),
        ({"x": {"source": "./missing.csv", "role": "target"}}, "eval_sets.x.source = './missing.csv': no such file"),
        (
            {"x": {"source": "embedded", "role": "target", "subset": "a"}},
            "eval_sets.x.subset = 'a': only a hub data set has subsets",
        ),
    ],
)
def test_bad_eval_sets_are_refused_naming_the_key(eval_sets, message):
    found = problems(eval_sets)
    assert any(message in problem for problem in found), found


def test_evaluation_reads_only_the_loss_settings_of_training():
    config = validate_config({}, search_dirs=[REPO], check_packages=False)
    assert eval_settings(config["training"]) == {
        key: config["training"][key]
        for key in ("max_seq_length", "per_device_eval_batch_size", "bf16", "fp16", "lm_head_loss", "drop_padding_mask")
    }


# --- the embedded source set ----------------------------------------------------------------------


def test_the_embedded_source_set_is_text_pretraining_never_saw():
    held_out, pretraining = held_out_pretraining_texts(), pretraining_texts()
    assert len(held_out) >= 100
    everything = "\n".join(pretraining)
    assert not [text for text in held_out if text in everything]
    # Its modules are neither in pretraining nor in the fine-tuning data, which would teach them.
    assert not set(HELD_OUT_MODULES) & set(STDLIB_MODULES)
    assert all(len(text.split()) >= 8 for text in held_out)


def test_the_embedded_source_set_is_fixed_and_cut_to_max_rows(tmp_path):
    first, card = load_eval_set(spec(source="embedded", role="source", max_rows=50))
    second, again = load_eval_set(spec(source="embedded", role="source", max_rows=50))
    assert first == second == held_out_pretraining_texts()[:50]
    assert card == again
    assert card["source"] == "embedded" and card["modules"] == list(HELD_OUT_MODULES)
    assert card["rows"]["kept"] == 50 and card["rows"]["non_empty"] == len(held_out_pretraining_texts())


# --- other sources --------------------------------------------------------------------------------


def test_a_local_file_set_drops_empty_rows_keeps_max_rows_and_writes_its_card(tmp_path):
    source = tmp_path / "general.jsonl"
    rows = [{"body": "first row"}, {"body": "  "}, {"body": "second row"}, {"body": "third row"}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    parquet, card_path = tmp_path / "out" / "general.parquet", tmp_path / "out" / "general.json"
    card_path.parent.mkdir()
    card = prepare_eval_set(spec(source=str(source), role="source", text_column="body", max_rows=2), parquet, card_path)
    assert pq.read_table(parquet).column("text").to_pylist() == ["first row", "second row"]
    assert loads_strict(card_path.read_text()) == card
    assert card["source"] == "local_file" and card["role"] == "source" and card["eval_set"] == "general"
    assert card["rows"] == {"non_empty": 3, "dropped_empty": 1, "kept": 2}
    assert card["split"] is None and card["text_column"] == "body"


def test_a_set_without_its_column_is_refused_and_leaves_nothing(tmp_path):
    source = tmp_path / "general.parquet"
    pq.write_table(pa.table({"body": ["a row"]}), source)
    parquet, card_path = tmp_path / "general.out.parquet", tmp_path / "general.json"
    with pytest.raises(DataError, match="has no column 'text'"):
        prepare_eval_set(spec(source=str(source), role="source"), parquet, card_path)
    assert not parquet.exists() and not card_path.exists()


def test_a_hub_id_goes_through_the_data_loading_code_with_its_subset(monkeypatch, tmp_path):
    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_dict({"text": ["", " = Heading = ", "A paragraph of text.", "Another."]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    texts, card = load_eval_set(
        spec(source="Salesforce/wikitext", subset="wikitext-2-raw-v1", role="source", max_rows=2)
    )
    assert calls == [("Salesforce/wikitext", {"name": "wikitext-2-raw-v1", "revision": None, "split": "test"})]
    assert texts == [" = Heading = ", "A paragraph of text."]
    assert (card["source"], card["subset"], card["split"]) == ("hub", "wikitext-2-raw-v1", "test")
    assert card["rows"]["dropped_empty"] == 1


def test_a_hub_style_local_folder_reads_the_split_asked_for(tmp_path):
    folder = tmp_path / "general"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["train row"]}), folder / "train.parquet")
    pq.write_table(pa.table({"text": ["test row one", "test row two"]}), folder / "test.parquet")
    texts, card = load_eval_set(spec(source=str(folder), role="source"))
    assert texts == ["test row one", "test row two"]
    assert (card["source"], card["split"]) == ("local_folder", "test")


def test_an_unreachable_hub_set_names_the_eval_sets_key(tmp_path):
    with pytest.raises(DataError) as caught:
        load_eval_set(spec(source="nobody-ftcompare/made-up-set", role="source"))
    assert str(caught.value).startswith("eval_sets.general.source = 'nobody-ftcompare/made-up-set': could not load")
