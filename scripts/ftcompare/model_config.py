"""The base model's config.json, found without loading or downloading weights: what the memory plan
builds the model from.

Looked for, in order: the embedded model's spec, a local model folder, the Hugging Face cache, a file
shipped in config/models/ (named after the hub id, `/` written `--`), and, only where the caller allows
it and the hub is not offline, the hub itself (config.json alone, a few kB). Torch-free.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ftcompare.errors import FtcompareError

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "config" / "models"
EMBEDDED = "embedded"


class ModelConfigNotFound(FtcompareError):
    """No config.json for the base model where the plan may look."""


@dataclass(frozen=True)
class ModelConfig:
    values: dict  # config.json as a mapping
    source: str  # where it was found, for the plan's readers


def embedded_config_values(embedded: dict) -> dict:
    """The LlamaConfig fields that give the embedded model its shape (ftcompare.embedded_model builds it so).

    `vocab_size` is the tokenizer's target size: the tokenizer trained locally reaches it on the
    documentation it is trained on.
    """
    return {
        "model_type": "llama",
        "vocab_size": embedded["vocab_size"],
        "hidden_size": embedded["hidden_size"],
        "intermediate_size": embedded["intermediate_size"],
        "num_hidden_layers": embedded["num_hidden_layers"],
        "num_attention_heads": embedded["num_attention_heads"],
        "num_key_value_heads": embedded["num_key_value_heads"],
        "max_position_embeddings": embedded["max_position_embeddings"],
        "tie_word_embeddings": False,
    }


def shipped_config_path(name: str) -> Path:
    return SHIPPED_DIR / f"{name.replace('/', '--')}.json"


def find_model_config(base_model: dict, search_dirs=(), allow_download: bool = False) -> ModelConfig:
    """The config of `base_model` (the config's validated section), or ModelConfigNotFound saying where to put it."""
    name, revision = base_model["name"], base_model.get("revision")
    if name == EMBEDDED:
        return ModelConfig(embedded_config_values(base_model["embedded"]), "base_model.embedded")
    folder = _local_folder(name, search_dirs)
    if folder is not None:
        path = folder / "config.json"
        if not path.is_file():
            raise ModelConfigNotFound(f"base_model.name = {name!r}: the folder {folder} has no config.json")
        return ModelConfig(_read(path), f"local folder {folder}")
    cached = _from_hub_cache(name, revision)
    if cached is not None:
        return ModelConfig(_read(cached), f"Hugging Face cache {cached}")
    shipped = shipped_config_path(name)
    if shipped.is_file():
        note = f" (shipped for the default branch; revision {revision} not checked)" if revision else ""
        return ModelConfig(_read(shipped), f"shipped file config/models/{shipped.name}{note}")
    if allow_download and not _hub_offline():
        return ModelConfig(_read(_download(name, revision)), f"Hugging Face hub ({name}, config.json only)")
    raise ModelConfigNotFound(
        f"base_model.name = {name!r}: the plan needs the model's config.json and found it in no local folder, "
        f"not in the Hugging Face cache and not as config/models/{shipped.name}. Fetch it once "
        f"(`hf download {name} config.json`), or copy it to config/models/{shipped.name}."
    )


def _local_folder(name: str, search_dirs) -> Path | None:
    candidates = [Path(name).expanduser()] + [Path(d) / name for d in search_dirs if not Path(name).is_absolute()]
    return next((path for path in candidates if path.is_dir()), None)


def _from_hub_cache(name: str, revision: str | None) -> Path | None:
    try:
        import huggingface_hub

        found = huggingface_hub.try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # not a valid hub id, or no cache: the other places are tried
        return None
    return Path(found) if isinstance(found, str) else None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _download(name: str, revision: str | None) -> Path:
    import huggingface_hub

    try:
        return Path(huggingface_hub.hf_hub_download(name, "config.json", revision=revision))
    except Exception as error:
        raise ModelConfigNotFound(
            f"base_model.name = {name!r}: could not fetch its config.json from the Hugging Face hub "
            f"({type(error).__name__}); copy it to config/models/{shipped_config_path(name).name}"
        ) from None


def _read(path: Path) -> dict:
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelConfigNotFound(f"{path}: not a readable config.json ({error})") from None
    if not isinstance(values, dict) or "model_type" not in values:
        raise ModelConfigNotFound(f"{path}: a model's config.json names its model_type; this one does not")
    return values
