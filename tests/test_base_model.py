"""The base_model stage: local folders, hub ids (offline: a prepared hub cache, or none), errors."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx2
import pytest
import torch
import transformers
from huggingface_hub import errors as hub_errors
from safetensors.torch import load_file

from ftcompare import base_model
from ftcompare.base_model import materialize_base_model, missing_model_files
from ftcompare.embedded_model import CARD_NAME, EmbeddedModelSpec, train_tokenizer
from ftcompare.errors import FtcompareError
from ftcompare.parameters import count_parameters
from ftcompare.pretraining_text import pretraining_texts

REPO = Path(__file__).resolve().parents[1]
HUB_ID = "tiny-org/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def quiet(message):
    pass


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    """A small Llama checkpoint as save_pretrained writes it."""
    folder = tmp_path_factory.mktemp("local") / "tiny-llama"
    tokenizer = train_tokenizer(pretraining_texts()[:50], 300)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hub_cache(local_model, tmp_path_factory):
    """An HF_HOME whose hub cache holds HUB_ID at COMMIT, laid out as huggingface_hub writes it."""
    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for path in local_model.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return home


def run_offline(name: str, out_dir: Path, hf_home: Path, dtype: str = "auto") -> dict:
    """materialize_base_model in a fresh process with HF_HUB_OFFLINE=1 (read when huggingface_hub is imported)."""
    code = textwrap.dedent("""
        import json, sys
        from ftcompare.base_model import materialize_base_model
        from ftcompare.errors import FtcompareError
        name, out_dir, dtype = sys.argv[1:]
        try:
            result = {"card": materialize_base_model(name, None, dtype, False, out_dir, None)}
        except FtcompareError as error:
            result = {"error": str(error)}
        print("RESULT " + json.dumps(result))
    """)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(hf_home),
        "PYTHONPATH": str(REPO / "scripts"),
        "HF_TOKEN": "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123",
    }
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", code, name, str(out_dir), dtype], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "hf_ThisIsNotARealToken" not in done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_local_folder_is_copied_with_a_card(local_model, tmp_path):
    out_dir = tmp_path / "base"
    card = materialize_base_model(str(local_model), None, "float32", False, out_dir, None, log=quiet)
    source = transformers.AutoModelForCausalLM.from_pretrained(local_model)
    assert card == json.loads((out_dir / CARD_NAME).read_text())
    assert (card["source"], card["path"], card["dtype"], card["model_type"]) == (
        "local",
        str(local_model.resolve()),
        "float32",
        "llama",
    )
    assert card["parameter_count"] == count_parameters(source).total == sum(p.numel() for p in source.parameters())
    assert missing_model_files(out_dir) == []
    copied = load_file(out_dir / "model.safetensors")
    assert all(torch.equal(copied[name], tensor) for name, tensor in source.state_dict().items())
    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    assert tokenizer("<s>[INST] hi [/INST]")["input_ids"][0] == tokenizer.bos_token_id


def test_local_folder_dtype(local_model, tmp_path):
    card = materialize_base_model(str(local_model), None, "bfloat16", False, tmp_path / "bf16", None, log=quiet)
    assert card["dtype"] == "bfloat16"
    assert {t.dtype for t in load_file(tmp_path / "bf16" / "model.safetensors").values()} == {torch.bfloat16}
    card = materialize_base_model(str(local_model), None, "auto", False, tmp_path / "auto", None, log=quiet)
    assert card["dtype"] == "float32", "auto keeps the checkpoint's dtype"


def test_not_a_model_folder_lists_what_is_missing(tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    out_dir = tmp_path / "base"
    with pytest.raises(FtcompareError) as caught:
        materialize_base_model(str(folder), None, "float32", False, out_dir, None, log=quiet)
    message = str(caught.value)
    assert "not a model folder" in message and str(folder) in message
    assert "weights" in message and "tokenizer" in message and "config.json" not in message.split("missing:")[1]
    assert not out_dir.exists()

    (tmp_path / "empty").mkdir()
    assert missing_model_files(tmp_path / "empty")[0] == "config.json"
    assert len(missing_model_files(tmp_path / "empty")) == 3


def test_adapter_folder_gets_a_hint(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(FtcompareError, match="PEFT adapter"):
        materialize_base_model(str(tmp_path), None, "float32", False, tmp_path / "out", None, log=quiet)


def test_missing_path_and_file_are_refused(tmp_path):
    with pytest.raises(FtcompareError, match="no such folder.*embedded"):
        materialize_base_model(
            str(tmp_path / "no" / "such" / "model"), None, "float32", False, tmp_path / "out", None, log=quiet
        )
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF")
    with pytest.raises(FtcompareError, match="is a file"):
        materialize_base_model(str(weights), None, "float32", False, tmp_path / "out", None, log=quiet)
    assert not (tmp_path / "out").exists()


def test_bad_dtype_is_refused(tmp_path):
    with pytest.raises(FtcompareError, match="base_model.dtype"):
        materialize_base_model("embedded", None, "float64", False, tmp_path / "out", None, log=quiet)


def test_embedded_name_builds_the_embedded_model(default_config, tmp_path):
    spec = dataclasses.replace(
        EmbeddedModelSpec.from_config(default_config),
        vocab_size=300,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        pretrain_steps=2,
        pretrain_batch_size=2,
        pretrain_seq_length=16,
        seed=1,
    )
    card = materialize_base_model("embedded", None, "float32", False, tmp_path / "base", spec, log=quiet)
    assert card["source"] == "embedded" and card["spec"]["seed"] == 1
    assert missing_model_files(tmp_path / "base") == []


def test_hub_id_offline_without_cache_fails_fast_and_clearly(tmp_path):
    out_dir = tmp_path / "base"
    result = run_offline("NousResearch/Llama-2-7b-chat-hf", out_dir, tmp_path / "empty_hf_home")
    message = result["error"]
    assert "NousResearch/Llama-2-7b-chat-hf" in message and "HF_HUB_OFFLINE=1" in message
    assert "local hub cache" in message and "base_model.name: embedded" in message
    assert not out_dir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".base")]


def test_hub_id_loads_from_the_hub_cache_offline(hub_cache, local_model, tmp_path):
    out_dir = tmp_path / "base"
    card = run_offline(HUB_ID, out_dir, hub_cache)["card"]
    assert (card["source"], card["name"], card["revision"], card["commit_hash"]) == ("hub", HUB_ID, None, COMMIT)
    assert card["dtype"] == "float32" and card["trust_remote_code"] is False
    assert card == json.loads((out_dir / CARD_NAME).read_text())
    original, copied = load_file(local_model / "model.safetensors"), load_file(out_dir / "model.safetensors")
    assert all(torch.equal(copied[name], tensor) for name, tensor in original.items())


def test_a_cached_safetensors_model_is_linked_not_written_again(hub_cache, local_model, tmp_path):
    """The weights stay in the hub cache (27 GB for a 7B model in fp32 are not written a second time)."""
    out_dir = tmp_path / "base"
    card = run_offline(HUB_ID, out_dir, hub_cache, dtype="float32")["card"]
    weights = out_dir / "model.safetensors"
    assert weights.is_symlink() and hub_cache in weights.resolve().parents
    assert card["linked_from"] == str(hub_cache / "hub" / f"models--{HUB_ID.replace('/', '--')}" / "snapshots" / COMMIT)
    local = transformers.AutoModelForCausalLM.from_pretrained(local_model)
    assert card["parameter_count"] == sum(p.numel() for p in local.parameters())
    assert missing_model_files(out_dir) == []
    linked = transformers.AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(linked.state_dict().values(), local.state_dict().values()))


def test_a_cached_model_without_safetensors_is_saved_as_safetensors(local_model, tmp_path):
    home = tmp_path / "hf_home"
    snapshot = home / "hub" / f"models--{HUB_ID.replace('/', '--')}" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for path in local_model.iterdir():
        if path.suffix != ".safetensors":
            (snapshot / path.name).write_bytes(path.read_bytes())
    torch.save(load_file(local_model / "model.safetensors"), snapshot / "pytorch_model.bin")  # pickled weights only
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(COMMIT)
    out_dir = tmp_path / "base"
    card = run_offline(HUB_ID, out_dir, home)["card"]
    assert "linked_from" not in card
    assert (out_dir / "model.safetensors").is_file() and not (out_dir / "model.safetensors").is_symlink()


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/x/y/resolve/main/config.json"))


@pytest.mark.parametrize(
    "error, expected",
    [
        (httpx2.ConnectError("[Errno 111] Connection refused"), "could not be reached"),
        (hub_errors.OfflineModeIsEnabled("offline"), "local hub cache"),
        (hub_errors.GatedRepoError("gated", response=_response(401)), "gated"),
        (hub_errors.RepositoryNotFoundError("missing", response=_response(404)), "no such model repository"),
        (hub_errors.RevisionNotFoundError("missing", response=_response(404)), "no such branch, tag or commit"),
        (hub_errors.RemoteEntryNotFoundError("no file", response=_response(404)), "no config.json"),
        (OSError("We couldn't connect to 'https://huggingface.co' to load the files"), "couldn't connect"),
    ],
)
def test_hub_errors_become_one_clear_message(error, expected):
    with pytest.raises(FtcompareError) as caught:
        with base_model._hub_errors("owner/model", "v1"):
            raise error
    message = str(caught.value)
    assert expected in message and "'owner/model'" in message
    if not isinstance(error, hub_errors.RevisionNotFoundError):
        assert "base_model.name: embedded" in message


def test_tokens_are_redacted(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret-token-value")
    with pytest.raises(FtcompareError) as caught:
        with base_model._hub_errors("owner/model", None):
            raise hub_errors.HfHubHTTPError(
                "401 for secret-token-value and hf_abcdefghijklmnopqrstuvwxyz012345", response=_response(401)
            )
    assert "secret-token-value" not in str(caught.value) and "hf_abcdefghij" not in str(caught.value)


def test_entry_script_reports_a_bad_folder_and_exits_1(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    smk = {
        "params": {
            "base_model": {"name": str(tmp_path / "not-a-model"), "revision": None, "dtype": "float32"},
            "seed": 1,
            "trust_remote_code": False,
        },
        "output": {"model": str(tmp_path / "results" / "base_model")},
        "log": [str(tmp_path / "base_model.log")],
        "rule": "base_model",
    }
    # The snakemake object as the script sees it: attributes params.base_model, output.model, log[0], rule.
    code = textwrap.dedent(f"""
        import json, runpy, sys
        from types import SimpleNamespace
        sys.path.insert(0, {str(REPO / "scripts")!r})
        smk = json.loads({json.dumps(smk)!r})
        smk = SimpleNamespace(params=SimpleNamespace(**smk["params"]), output=SimpleNamespace(**smk["output"]),
                              log=smk["log"], rule=smk["rule"])
        runpy.run_path({str(REPO / "scripts" / "base_model.py")!r}, init_globals={{"snakemake": smk}})
    """)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 1, done.stderr
    assert "ftcompare: rule base_model:" in done.stderr and "not a model folder" in done.stderr
    assert "not a model folder" in (tmp_path / "base_model.log").read_text()
    assert not (tmp_path / "results" / "base_model").exists()


def test_a_failed_save_leaves_no_output(local_model, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    out_dir = tmp_path / "base"
    monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "save_pretrained", fail)
    with pytest.raises(FtcompareError, match="No space left on device"):
        materialize_base_model(str(local_model), None, "float32", False, out_dir, None, log=quiet)
    assert list(tmp_path.iterdir()) == [], "neither the output nor its temporary folder may remain"
