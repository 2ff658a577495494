"""The base_model stage: put the model every run starts from into one folder, whatever its source.

`base_model.name` is `embedded` (built here, see ftcompare.embedded_model), a local model folder,
or a Hugging Face hub id. Each ends as a save_pretrained folder (weights, config, tokenizer,
generation config) plus ftcompare_model.json, a card saying where it came from.
"""

import contextlib
import importlib
import logging
import os
import re
import time
from pathlib import Path

import huggingface_hub
import torch
import transformers
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors
from huggingface_hub.utils import validate_repo_id

from ftcompare import strict_json
from ftcompare.atomic import atomic_path
from ftcompare.embedded_model import CARD_NAME, EmbeddedModelSpec, build_embedded_model
from ftcompare.errors import FtcompareError
from ftcompare.parameters import count_parameters

EMBEDDED = "embedded"
DTYPES = ("auto", "float32", "bfloat16", "float16")
# What a hub snapshot is linked with: config, safetensors weights (and their index), tokenizer files.
LINKED_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
WEIGHT_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tekken.json", "tiktoken.model")
ALTERNATIVES = (
    "use a local model folder (base_model.name: /path/to/folder, as written by save_pretrained) "
    "or the offline default (base_model.name: embedded)"
)

__all__ = ["materialize_base_model", "missing_model_files", "EMBEDDED"]


def materialize_base_model(
    name: str,
    revision: str | None,
    dtype: str,
    trust_remote_code: bool,
    out_dir,
    embedded_spec: EmbeddedModelSpec | None,
    log=None,
) -> dict:
    """Write the base model named by `name` into `out_dir` and return its card.

    `dtype` is float32, bfloat16, float16, or auto (the checkpoint's own). `embedded_spec` is what
    `embedded` builds (None for any other name). `log` takes one message string (default: logging).
    Raises FtcompareError with a message for the user when the model cannot be had; `out_dir` then
    does not exist.
    """
    log = log or logging.getLogger(__name__).info
    if dtype not in DTYPES:
        raise FtcompareError(f"base_model.dtype = {dtype!r}: allowed values are {', '.join(DTYPES)}")
    if name == EMBEDDED:
        return build_embedded_model(embedded_spec, out_dir, log=log, dtype=dtype)

    folder = Path(name).expanduser()
    if folder.is_dir():
        missing = missing_model_files(folder)
        if missing:
            raise FtcompareError(_not_a_model_folder_message(name, folder, missing))
        if revision:
            log(f"base model: base_model.revision = {revision!r} is ignored for a local folder")
        log(f"base model: loading the local folder {folder.resolve()}")
        try:
            return _save_model(
                str(folder),
                None,
                dtype,
                trust_remote_code,
                out_dir,
                {"source": "local", "name": name, "path": str(folder.resolve())},
                log,
            )
        except ValueError as error:
            raise FtcompareError(_load_refused_message(name, error)) from error
        except OSError as error:
            raise FtcompareError(
                f"base_model.name = {name!r}: could not load the folder {folder}: {_redact(str(error))}"
            ) from error
    if folder.exists():
        raise FtcompareError(
            f"base_model.name = {name!r} is a file; expected a model folder (as written by "
            f"save_pretrained), a Hugging Face hub id, or `embedded`"
        )
    try:
        validate_repo_id(name)
    except hub_errors.HFValidationError:
        raise FtcompareError(
            f"base_model.name = {name!r}: there is no such folder (looked in {Path.cwd()}) and it "
            f"is not a Hugging Face hub id (owner/name); {ALTERNATIVES}"
        ) from None

    commit = resolve_hub_commit(name, revision)
    log(
        f"base model: downloading {name} from the Hugging Face hub (revision {revision or 'main'}, "
        f"commit {commit or 'unknown'}); trust_remote_code={trust_remote_code}"
    )
    card_fields = {"source": "hub", "name": name, "revision": revision, "commit_hash": commit}
    with _hub_errors(name, revision):
        linked = _link_hub_snapshot(name, commit or revision, trust_remote_code, out_dir, card_fields, log)
        if linked is not None:
            return linked
        try:
            return _save_model(
                name,
                commit or revision,
                dtype,
                trust_remote_code,
                out_dir,
                card_fields,
                log,
            )
        except ValueError as error:
            raise FtcompareError(_load_refused_message(name, error)) from error


def _link_hub_snapshot(
    name: str, revision: str | None, trust_remote_code: bool, out_dir, card_fields: dict, log
) -> dict | None:
    """Link the hub cache's files of a safetensors model into `out_dir` instead of writing the weights again
    (a 7B model in fp32 is 27 GB); jobs load it in base_model.dtype from there. None when the snapshot has
    no safetensors weights: the model is then loaded and saved as safetensors."""
    snapshot = Path(huggingface_hub.snapshot_download(name, revision=revision, allow_patterns=LINKED_FILES))
    if not any(snapshot.glob("*.safetensors")) or missing_model_files(snapshot):
        return None
    config = transformers.AutoConfig.from_pretrained(snapshot, trust_remote_code=trust_remote_code)
    tokenizer = transformers.AutoTokenizer.from_pretrained(snapshot, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    card = {
        **card_fields,
        "model_type": config.model_type,
        "parameter_count": count_parameters(model).total,
        "dtype": str(config.dtype or "unknown").removeprefix("torch."),
        "vocab_size": len(tokenizer),
        "trust_remote_code": trust_remote_code,
        "linked_from": str(snapshot),
    }
    log(f"base model: {card['parameter_count']:,} parameters; linking the hub cache's files {snapshot} into {out_dir}")
    with atomic_path(out_dir, is_dir=True) as tmp:
        for path in snapshot.iterdir():
            if path.is_file():
                (tmp / path.name).symlink_to(path.resolve())
        (tmp / CARD_NAME).write_text(strict_json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def missing_model_files(folder) -> list[str]:
    """What a save_pretrained model folder lacks: config, weights, tokenizer (empty when complete)."""
    names = {path.name for path in Path(folder).iterdir() if path.is_file()}
    missing = []
    if "config.json" not in names:
        missing.append("config.json")
    has_weights = any(
        n.endswith(".safetensors") or (n.startswith("pytorch_model") and n.endswith(".bin")) or n in WEIGHT_INDEX_FILES
        for n in names
    )
    if not has_weights:
        missing.append("weights (*.safetensors, pytorch_model*.bin, or an index of either)")
    if not names & set(TOKENIZER_FILES):
        missing.append(f"a tokenizer (one of {', '.join(TOKENIZER_FILES)})")
    return missing


def resolve_hub_commit(name: str, revision: str | None) -> str | None:
    """Fetch (or find in the hub cache) the model's config.json: a cheap check before the big download.

    Returns the commit hash it resolved to, which the weights and tokenizer are then loaded from,
    so all three come from the same commit. Raises FtcompareError when the hub cannot be used.
    """
    with _hub_errors(name, revision):
        config_path = Path(huggingface_hub.hf_hub_download(name, "config.json", revision=revision))
    if config_path.parent.parent.name == "snapshots":  # <cache>/models--owner--name/snapshots/<commit>/
        return config_path.parent.name
    return None


def _save_model(
    load_from: str, revision: str | None, dtype: str, trust_remote_code: bool, out_dir, card_fields: dict, log
) -> dict:
    started = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        load_from,
        revision=revision,
        dtype=dtype if dtype == "auto" else getattr(torch, dtype),
        trust_remote_code=trust_remote_code,
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        load_from, revision=revision, trust_remote_code=trust_remote_code
    )
    card = {
        **card_fields,
        "model_type": model.config.model_type,
        "parameter_count": count_parameters(model).total,
        "dtype": str(model.dtype).removeprefix("torch."),
        "vocab_size": len(tokenizer),
        "trust_remote_code": trust_remote_code,
    }
    log(
        f"base model: {card['parameter_count']:,} parameters ({card['model_type']}, {card['dtype']}); "
        f"saving to {out_dir}"
    )
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card["load_seconds"] = round(time.perf_counter() - started, 3)
        (tmp / CARD_NAME).write_text(strict_json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


@contextlib.contextmanager
def _hub_errors(name: str, revision: str | None):
    """Turn the hub's and the network's exceptions into one FtcompareError that says what to do."""
    where = f"{name!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        yield
    except hub_errors.GatedRepoError as error:
        raise FtcompareError(
            f"base_model.name = {where}: the repository is gated; accept its terms on "
            f"https://huggingface.co/{name} and log in (`hf auth login` or the HF_TOKEN "
            f"environment variable), or {ALTERNATIVES}"
        ) from error
    except hub_errors.RepositoryNotFoundError as error:
        raise FtcompareError(
            f"base_model.name = {where}: no such model repository on the Hugging Face hub "
            f"(or it is private and you are not logged in); {ALTERNATIVES}"
        ) from error
    except hub_errors.RevisionNotFoundError as error:
        raise FtcompareError(
            f"base_model.revision = {revision!r}: no such branch, tag or commit in {name!r} "
            f"on the Hugging Face hub; fix base_model.revision or set it to null"
        ) from error
    except hub_errors.LocalEntryNotFoundError as error:
        raise FtcompareError(_unreachable_message(where)) from error
    except hub_errors.RemoteEntryNotFoundError as error:
        raise FtcompareError(
            f"base_model.name = {where}: the repository has no config.json, so it is not a "
            f"transformers model; {ALTERNATIVES}"
        ) from error
    except _connection_errors() as error:
        raise FtcompareError(_unreachable_message(where)) from error
    except hub_errors.HfHubHTTPError as error:
        raise FtcompareError(
            f"base_model.name = {where}: the Hugging Face hub refused the request: "
            f"{_redact(str(error))}; {ALTERNATIVES}"
        ) from error
    except OSError as error:  # transformers reports failed downloads as OSError with its own message
        raise FtcompareError(
            f"base_model.name = {where}: could not load it from the Hugging Face hub: "
            f"{_redact(str(error))}; {ALTERNATIVES}"
        ) from error


def _unreachable_message(where: str) -> str:
    cause = (
        "offline mode is on (HF_HUB_OFFLINE=1)"
        if hub_constants.is_offline_mode()
        else "the network or the hub could not be reached"
    )
    return (
        f"base_model.name = {where}: could not download it from the Hugging Face hub: {cause}, and it is "
        f"not in the local hub cache ({hub_constants.HF_HUB_CACHE}); {ALTERNATIVES}"
    )


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Connection and timeout errors of whichever HTTP libraries huggingface_hub and transformers use."""
    types: list[type[BaseException]] = [hub_errors.OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module_name, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        with contextlib.suppress(ImportError):
            module = importlib.import_module(module_name)
            types.extend(getattr(module, attr) for attr in names if hasattr(module, attr))
    return tuple(types)


def _not_a_model_folder_message(name: str, folder: Path, missing: list[str]) -> str:
    message = f"base_model.name = {name!r}: the folder {folder} is not a model folder; missing: {'; '.join(missing)}"
    if (folder / "adapter_config.json").is_file():
        message += ". It holds a PEFT adapter: point base_model.name at the model it adapts"
    elif (folder / "snapshots").is_dir():
        message += ". It looks like a hub cache entry: point base_model.name at one of its snapshots/<commit> folders"
    return message + "; a model folder is what model.save_pretrained and tokenizer.save_pretrained write"


def _load_refused_message(name: str, error: ValueError) -> str:
    text = _redact(str(error))
    if "trust_remote_code" in text:
        return (
            f"base_model.name = {name!r} needs its own Python code from the hub to load; if you trust it, "
            f"set `trust_remote_code: true` at the top of the config"
        )
    return f"base_model.name = {name!r}: could not load it as a causal language model: {text}"


_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{20,}")


def _redact(text: str) -> str:
    """Remove anything that looks like a Hugging Face token from `text` before it reaches a log."""
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        token = os.environ.get(variable)
        if token:
            text = text.replace(token, "***")
    return _TOKEN_PATTERN.sub("***", text)
